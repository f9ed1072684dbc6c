#!/usr/bin/env python3
"""Parses one RFC 5322 message from stdin with Python's email package and prints JSON.

Output: {"headers": {name: [values...]}, "defects": [...], "tree": node}
node: {"type", "params", "cte", "disposition", "filename", "charset",
       "text" (decoded, for text/plain and text/html),
       "calendar" (for text/calendar: method and events parsed by the icalendar package),
       "children": [node...]}
"""
import email
import email.policy
import json
import sys

import icalendar


def calendar(data):
    cal = icalendar.Calendar.from_ical(data)
    events = []
    for ev in cal.walk("VEVENT"):
        events.append(
            {
                "uid": str(ev.get("UID")),
                "sequence": int(ev.get("SEQUENCE", 0)),
                "summary": str(ev.get("SUMMARY", "")),
                "dtstart": ev.decoded("DTSTART").isoformat() if ev.get("DTSTART") else None,
            }
        )
    return {"method": str(cal.get("METHOD", "")), "events": events}


def node(part):
    out = {
        "type": part.get_content_type(),
        "params": {k.lower(): v for k, v in part.get_params()[1:]} if part.get_params() else {},
        "cte": (part.get("Content-Transfer-Encoding") or "").lower(),
        "disposition": part.get_content_disposition(),
        "filename": part.get_filename(),
        "charset": part.get_content_charset(),
        "children": [],
    }
    if part.is_multipart():
        out["children"] = [node(p) for p in part.iter_parts()]
    elif part.get_content_type() in ("text/plain", "text/html"):
        out["text"] = part.get_content()
    elif part.get_content_type() == "text/calendar":
        out["calendar"] = calendar(part.get_payload(decode=True))
    return out


def main():
    raw = sys.stdin.buffer.read()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    headers = {}
    for k, v in msg.items():
        headers.setdefault(k.lower(), []).append(str(v))
    raw_headers = {}
    compat = email.message_from_bytes(raw, policy=email.policy.compat32)
    for k, v in compat.items():
        raw_headers.setdefault(k.lower(), []).append(v)
    json.dump(
        {
            "headers": headers,
            "raw_headers": raw_headers,
            "defects": [type(d).__name__ for d in msg.defects],
            "tree": node(msg),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
