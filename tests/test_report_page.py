"""The committed report a reviewer opens (results/report.html): self-contained, complete, and it renders in a real
headless browser with every image loaded and no console error; the README's results block is the generated one."""

import re
import shutil

import pytest

from psftlib.artifacts import reported
from psftlib.config import load_profile
from psftlib.layout import DEFAULT_PROFILE
from psftlib.report.readme import update

REPORT = load_profile(DEFAULT_PROFILE).layout.report
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def test_the_report_is_self_contained_and_shows_every_artifact():
    page = REPORT.read_text()
    assert "<script" not in page, "no script: nothing loads from a CDN"
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', page.replace('href="https://arxiv', "")), (
        "external loads"
    )
    assert re.search(r"<title>[^<]*Proximal Supervised Fine-Tuning", page)
    assert "<nav>" in page and 'href="#Headline"' in page  # the table of contents, the headline first
    for out in reported(load_profile(DEFAULT_PROFILE)):
        assert f"notebooks/{out.artifact}.py" in page, f"{out.stem}: no link to its notebook"
    images = re.findall(r'<img[^>]* src="data:image/png;base64,([^"]+)"', page)
    figures = [o for o in reported(load_profile(DEFAULT_PROFILE)) if o.kind == "figure"]
    assert len(images) >= len(figures) and all(len(i) > 1000 for i in images)
    assert "<details><summary>" in page  # the wall-time table, collapsed


def test_the_report_renders_in_a_headless_browser():
    playwright = pytest.importorskip("playwright.sync_api")
    browser_path = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if browser_path is None:
        pytest.skip(
            f"no headless browser on PATH ({', '.join(BROWSERS)}; Debian: apt install chromium-headless-shell)"
        )
    errors, external = [], []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request", lambda r: external.append(r.url) if not r.url.startswith(("file:", "data:")) else None
        )
        page.goto(REPORT.as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
        headings = page.eval_on_selector_all("main h2", "els => els.map(e => e.textContent)")
        browser.close()
    assert not errors and not external, (errors, external)
    assert images and all(images), f"{images.count(False)} of {len(images)} images did not load"
    assert any("Headline" in h for h in headings) and any("Figures" in h for h in headings)


def test_the_readme_results_block_is_generated_from_the_committed_findings():
    assert update(check=True), "README.md: results block out of date; run: python -m psftlib.report.readme"
