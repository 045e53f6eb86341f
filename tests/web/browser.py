#!/usr/bin/env python3
"""A headless Chromium the end-to-end tests steer: one JSON command per line on stdin, one
answer per line on stdout ("answer ok <json>" or "answer err <text>"). Playwright drives the system's
Chromium (CHROMIUM, default /usr/bin/chromium); nothing is downloaded.

Commands: {"op": "goto", "url": U}, {"op": "wait", "selector": S, "text": T, "timeout": MS}
(an element matching S whose text contains T), {"op": "type", "selector": S, "text": T}
(typed, a line break as Shift+Enter, then Enter), {"op": "eval", "js": J}, {"op": "screenshot", "path": P}.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright


def answer(ok, value):
    print(("answer ok " if ok else "answer err ") + json.dumps(value), flush=True)


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            args=["--no-sandbox"],
        )
        page = browser.new_page(viewport={"width": 900, "height": 640})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        print("ready", flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            op = cmd["op"]
            try:
                if op == "goto":
                    response = page.goto(cmd["url"])
                    answer(True, {"status": response.status if response else None})
                elif op == "wait":
                    page.wait_for_function(
                        """([sel, text]) => [...document.querySelectorAll(sel)]
                               .some(e => e.textContent.includes(text))""",
                        arg=[cmd["selector"], cmd.get("text", "")],
                        timeout=cmd.get("timeout", 10000),
                    )
                    answer(True, None)
                elif op == "type":
                    page.focus(cmd["selector"])
                    for i, line in enumerate(cmd["text"].split("\n")):
                        if i > 0:
                            page.keyboard.press("Shift+Enter")
                        page.keyboard.type(line)
                    page.keyboard.press("Enter")
                    answer(True, None)
                elif op == "eval":
                    answer(True, page.evaluate(cmd["js"]))
                elif op == "screenshot":
                    page.screenshot(path=cmd["path"])
                    answer(True, None)
                elif op == "errors":
                    answer(True, errors)
                else:
                    answer(False, "unknown op " + op)
            except Exception as e:  # the test prints it and fails
                answer(False, str(e).splitlines()[0] if str(e) else repr(e))
        browser.close()


if __name__ == "__main__":
    main()
