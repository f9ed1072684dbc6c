#!/usr/bin/env python3
"""Read the subscribe page's DOM (as dumped by headless Chromium) on stdin and print JSON.

Output: {"title": str, "lang": str, "feeds": [{"section": id, "links": {client: href},
"url": text of the copyable URL, "decoded": {client: the feed URL each link carries}}],
"problems": [...]}. Each client link is decoded the way the client would read it: the `url`
query value for Outlook.com and Microsoft 365, `cid` for Google, the link itself for webcal.
"""

import json
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.feeds = []
        self.section_stack = []
        self.title = ""
        self.lang = ""
        self._in_title = False
        self._in_url = False
        self.headings = []
        self._heading = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang", "")
        if tag == "title":
            self._in_title = True
        if tag in ("h1", "h2", "h3"):
            self._heading = ""
        if tag == "section" and "feed" in (a.get("class") or "").split():
            self.feeds.append({"section": a.get("aria-labelledby", ""), "links": {}, "url": ""})
        if tag == "a" and a.get("data-client") and self.feeds:
            self.feeds[-1]["links"][a["data-client"]] = a.get("href", "")
        if tag == "code" and a.get("data-client") == "url" and self.feeds:
            self._in_url = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag == "code":
            self._in_url = False
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._in_url:
            self.feeds[-1]["url"] += data.strip()
        if self._heading is not None:
            self._heading += data


def decode(client, href):
    parts = urlsplit(href)
    query = parse_qs(parts.query)
    if client in ("outlook-com", "microsoft-365"):
        return {"host": parts.netloc, "path": parts.path, "url": query.get("url", [""])[0],
                "name": query.get("name", [""])[0]}
    if client == "google":
        return {"host": parts.netloc, "path": parts.path, "url": query.get("cid", [""])[0]}
    return {"scheme": parts.scheme, "url": href}


def main():
    page = Page()
    page.feed(sys.stdin.read())
    for f in page.feeds:
        f["decoded"] = {c: decode(c, h) for c, h in f["links"].items()}
    json.dump({"title": page.title, "lang": page.lang, "headings": page.headings,
               "feeds": page.feeds}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
