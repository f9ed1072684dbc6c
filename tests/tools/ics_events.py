#!/usr/bin/env python3
"""Parse an iCalendar feed with Python's icalendar (independent of the Rust crate that wrote it).

Reads ICS on stdin and prints JSON:
  {"calendar": {...calendar properties...},
   "events": [{"uid", "sequence", "status", "summary", "description", "location", "organizer",
               "url", "dtstamp", "last_modified", "start_utc", "end_utc", "tzid"}],
   "timezones": {"<TZID>": {"observances": [...], "mismatches": [...]}},
   "problems": [...]}

Event instants are computed from the feed's own VTIMEZONE (not from the system's zone database),
so a wrong VTIMEZONE gives wrong instants. Each VTIMEZONE is also compared with the IANA zone of
the same name every day of the years the events span; differences are listed as mismatches.
"Problems" lists violations of the wire rules: bare LF, lines over 75 octets, invalid UTF-8, a
fold right after an escaping backslash, a missing final CRLF, a TZID without VTIMEZONE.
Exits non-zero only when the input cannot be parsed at all.
"""

import datetime as dt
import json
import sys
import zoneinfo

import icalendar

UTC = dt.timezone.utc


def wire_problems(raw: bytes) -> list:
    problems = []
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"invalid UTF-8: {e}")
    if not raw.endswith(b"END:VCALENDAR\r\n"):
        problems.append("does not end with END:VCALENDAR CRLF")
    if b"\n" in raw.replace(b"\r\n", b""):
        problems.append("bare LF")
    if b"\r" in raw.replace(b"\r\n", b""):
        problems.append("bare CR")
    lines = raw.split(b"\r\n")
    for i, line in enumerate(lines):
        if len(line) > 75:
            problems.append(f"line {i + 1} is {len(line)} octets")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"line {i + 1} splits a UTF-8 character")
        nxt = lines[i + 1] if i + 1 < len(lines) else b""
        if nxt.startswith(b" "):
            run = len(line) - len(line.rstrip(b"\\"))
            if run % 2 == 1:
                problems.append(f"line {i + 1} folds between a backslash and its escaped char")
    return problems


def ical_text(prop) -> str:
    value = prop.to_ical()
    return value.decode() if isinstance(value, bytes) else str(value)


def utc_string(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> int:
    raw = sys.stdin.buffer.read()
    problems = wire_problems(raw)
    cal = icalendar.Calendar.from_ical(raw.decode("utf-8", errors="replace"))

    zones = {}
    timezones = {}
    for vtz in cal.walk("VTIMEZONE"):
        tzid = str(vtz["TZID"])
        zones[tzid] = vtz.to_tz(lookup_tzid=False)
        observances = []
        for sub in vtz.subcomponents:
            observances.append({
                "kind": sub.name,
                "dtstart": ical_text(sub["DTSTART"]),
                "rrule": ical_text(sub["RRULE"]) if "RRULE" in sub else None,
                "offset_from": ical_text(sub["TZOFFSETFROM"]),
                "offset_to": ical_text(sub["TZOFFSETTO"]),
                "name": str(sub.get("TZNAME", "")),
            })
        timezones[tzid] = {"observances": observances, "mismatches": []}

    events = []
    years = set()
    for ev in cal.walk("VEVENT"):
        out = {}
        for key in ("DTSTART", "DTEND"):
            prop = ev[key]
            tzid = prop.params.get("TZID")
            value = prop.dt
            if tzid is not None:
                if tzid not in zones:
                    problems.append(f"TZID {tzid} has no VTIMEZONE")
                    continue
                value = value.replace(tzinfo=None)
                value = value.replace(tzinfo=zones[tzid])
                out["tzid"] = tzid
            elif value.tzinfo is None:
                problems.append(f"{key} of {ev.get('UID')} is floating")
                continue
            out[key.lower().replace("dt", "") + "_utc"] = utc_string(value)
            years.add(value.year)
        for key in ("DTSTAMP", "LAST-MODIFIED"):
            if key in ev:
                out[key.lower().replace("-", "_")] = utc_string(ev[key].dt)
            else:
                problems.append(f"{key} missing in {ev.get('UID')}")
        out["uid"] = str(ev.get("UID"))
        out["sequence"] = int(ev.get("SEQUENCE", 0))
        out["status"] = str(ev.get("STATUS", ""))
        out["summary"] = str(ev.get("SUMMARY", ""))
        out["description"] = str(ev.get("DESCRIPTION", ""))
        out["location"] = str(ev["LOCATION"]) if "LOCATION" in ev else None
        out["organizer"] = str(ev.get("ORGANIZER", ""))
        out["organizer_cn"] = ev["ORGANIZER"].params.get("CN") if "ORGANIZER" in ev else None
        out["url"] = str(ev.get("URL", ""))
        if "ORGANIZER" not in ev:
            problems.append(f"ORGANIZER missing in {out['uid']} (METHOD:PUBLISH needs it)")
        events.append(out)

    # Compare each VTIMEZONE with the IANA zone of that name over the events' years.
    for tzid, tz in zones.items():
        try:
            iana = zoneinfo.ZoneInfo(tzid)
        except Exception:  # noqa: BLE001 - a non-IANA TZID has nothing to compare with
            continue
        for year in sorted(years):
            day = dt.datetime(year, 1, 1, tzinfo=UTC)
            while day.year == year:
                for hour in (0, 12):
                    t = day + dt.timedelta(hours=hour)
                    ours = t.astimezone(tz).utcoffset()
                    theirs = t.astimezone(iana).utcoffset()
                    if ours != theirs:
                        timezones[tzid]["mismatches"].append(
                            f"{utc_string(t)}: VTIMEZONE {ours}, IANA {theirs}")
                day += dt.timedelta(days=1)

    calendar = {k: str(cal[k]) for k in cal.keys()}
    for key in ("REFRESH-INTERVAL",):
        if key in cal:
            calendar[key] = ical_text(cal[key])
            calendar[key + ";VALUE"] = cal[key].params.get("VALUE")
    uids = [e["uid"] for e in events]
    if len(uids) != len(set(uids)):
        problems.append("duplicate UID")
    json.dump({"calendar": calendar, "events": events, "timezones": timezones,
               "problems": problems}, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
