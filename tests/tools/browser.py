#!/usr/bin/env python3
"""Drive headless Chromium through the DevTools protocol: open a page, run steps, print JSON.

Usage: browser.py URL STEPS_JSON

STEPS_JSON is a list of steps, run in order on one tab:
  {"fill": {"<element id>": "<value>", ...}}   set inputs/textareas/selects (checkbox: true/false)
  {"click": "<css selector>"}                  click it and wait for the page it loads
  {"text": "<css selector>"}                   record that element's text (null when absent)
Prints {"url": final URL, "texts": [...recorded texts...], "status": HTTP status of the last
document loaded}. The form is filled and submitted by the browser itself, so the request carries
what a real browser sends (Origin, Sec-Fetch-Site, the form encoding).

Chromium runs with --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
--disable-background-networking --disable-component-update --disable-sync and a temporary
profile; its DevTools port is read from the profile's DevToolsActivePort file.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


class Tab:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []
        self.last_status = None

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.note(msg)

    def note(self, msg):
        if msg.get("method") == "Network.responseReceived":
            p = msg["params"]
            if p.get("type") == "Document":
                self.last_status = p["response"]["status"]
        self.events.append(msg)

    def wait_load(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, m in enumerate(self.events):
                if m.get("method") == "Page.loadEventFired":
                    del self.events[: i + 1]
                    return
            self.note(json.loads(self.ws.recv()))
        raise RuntimeError("the page did not load")

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")


def main():
    url, steps = sys.argv[1], json.loads(sys.argv[2])
    profile = tempfile.mkdtemp(prefix="convenor-chromium-")
    chromium = subprocess.Popen(
        [
            shutil.which("chromium") or "chromium",
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--remote-debugging-port=0", "--remote-allow-origins=*",
            f"--user-data-dir={profile}", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.monotonic() > deadline or chromium.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t.get("type") == "page")
        tab = Tab(page["webSocketDebuggerUrl"])
        tab.call("Page.enable")
        tab.call("Network.enable")
        tab.call("Runtime.enable")
        tab.call("Page.navigate", url=url)
        tab.wait_load()
        texts = []
        for step in steps:
            if "fill" in step:
                for element, value in step["fill"].items():
                    js = (
                        "(() => { const e = document.getElementById(%s);"
                        " if (!e) throw new Error('no element ' + %s);"
                        " if (e.type === 'checkbox') e.checked = %s; else e.value = %s; })()"
                        % (json.dumps(element), json.dumps(element),
                           "true" if value is True else "false", json.dumps(value))
                    )
                    tab.eval(js)
            elif "click" in step:
                sel = json.dumps(step["click"])
                tab.eval("document.querySelector(%s).click()" % sel)
                tab.wait_load()
            elif "text" in step:
                sel = json.dumps(step["text"])
                texts.append(tab.eval(
                    "(() => { const e = document.querySelector(%s);"
                    " return e ? e.textContent : null; })()" % sel))
        final = tab.eval("location.href")
        json.dump({"url": final, "texts": texts, "status": tab.last_status}, sys.stdout)
    finally:
        chromium.terminate()
        try:
            chromium.wait(timeout=10)
        except subprocess.TimeoutExpired:
            chromium.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
