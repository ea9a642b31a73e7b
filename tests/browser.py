"""Open a build report in a real headless browser, as a person would: Debian's chromium (installed by
`make install`) driven by Playwright — never Playwright's own browser downloads.

    .venv/bin/python tests/browser.py builds/demo/artifacts/report/index.html /tmp/report.png

prints the console errors, broken images and funnel numbers, and saves a full-page screenshot.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


class NoBrowser(RuntimeError):
    """chromium or playwright is not installed."""


@dataclass
class PageView:
    console_errors: list[str] = field(default_factory=list)  # console.error messages, page errors, failed loads
    images: int = 0
    broken_images: list[str] = field(default_factory=list)  # <img> that did not load (naturalWidth 0)
    funnel: dict[str, str] = field(default_factory=dict)  # data-funnel → data-value ("" = not built)
    missing: list[str] = field(default_factory=list)  # sections marked not built (data-missing)
    stages: dict[str, str] = field(default_factory=dict)  # data-stage → data-state
    no_pairs: list[str] = field(default_factory=list)  # categories listed without pseudo-labelled pairs
    title: str = ""
    height: int = 0  # the page's full height in CSS pixels


def chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        raise NoBrowser("chromium is not installed: `make install` installs it (apt-get install chromium)")
    return path


def open_page(page: Path, screenshot: Path | None = None, width: int = 1300, full_page: bool = True) -> PageView:
    """Load `page` from disk, wait for every image, collect what a person would notice."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise NoBrowser("playwright is not installed: `make install` installs the dev extras") from exc
    view = PageView()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=ARGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": 1000})
            tab.on("console", lambda m: view.console_errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: view.console_errors.append(f"page error: {e}"))
            tab.on("requestfailed", lambda r: view.console_errors.append(f"failed to load {r.url}"))
            tab.goto(Path(page).resolve().as_uri(), wait_until="load")
            view.images = tab.evaluate("document.images.length")
            view.broken_images = tab.evaluate(
                "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            view.funnel = tab.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('[data-funnel]'))"
                                       ".map(e => [e.dataset.funnel, e.dataset.value]))")
            view.missing = tab.evaluate("Array.from(document.querySelectorAll('[data-missing]'))"
                                        ".map(e => e.dataset.missing)")
            view.stages = tab.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('[data-stage]'))"
                                       ".map(e => [e.dataset.stage, e.dataset.state]))")
            view.no_pairs = tab.evaluate("Array.from(document.querySelectorAll('[data-no-pairs] + ul code'))"
                                         ".map(e => e.textContent)")
            view.title = tab.title()
            view.height = tab.evaluate("document.documentElement.scrollHeight")
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(screenshot), full_page=full_page)
        finally:
            browser.close()
    return view


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    result = open_page(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None)
    print(json.dumps(asdict(result), indent=2))
