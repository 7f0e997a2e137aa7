"""The results explorer (index.html, bench/report/html.py) — offline, the CSV files' numbers, and in a real browser
(headless Chromium through Playwright): no console errors, the tables' rows, sorting, filtering, the heatmap
gallery, the method checkboxes of the curves, the provenance with a failed and a missing job, a screenshot.

The browser tests skip (with the reason) only when no Chromium binary or no Playwright is found; with
``BENCH_REQUIRE_BROWSER=1`` (CI, after installing Debian's ``chromium``) that is a failure."""

import os
import re
import shutil

import pandas as pd
import pytest

from test_report import make_protocols, make_run
from bench.report import make_report

METHODS = ("random", "sensitivity", "lrp_eps")
DATASETS = ("toyset", "otherset")
GRID = 4  # images per dataset in the gallery (--grid-images)
EXPECTED_JOBS = "hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n" \
                "    params:\n      method: {}\n  overrides:\n    task: []\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A sweep of 3 methods × 2 datasets (the faithfulness family on one), a job that failed and one that never
    started, and its report."""
    root = tmp_path_factory.mktemp("explorer")
    sweep = root / "sweep"
    for dataset in DATASETS:
        for method in METHODS:
            run = make_run(sweep / f"method={method},dataset={dataset}", method, dataset, images=True)
            (run / "summary.csv").write_text("")  # a finished run folder, as listed by its sweep
            (run / ".hydra").mkdir()
            (run / ".hydra" / "overrides.yaml").write_text(f"- method={method}\n- dataset={dataset}\n")
            if dataset == "toyset":
                make_protocols(run, method)
    failed = sweep / "method=deconvnet,dataset=toyset"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text("- method=deconvnet\n- dataset=toyset\n")
    (failed / "FAILED").write_text("error: CUDA out of memory (a test's failure)\n")
    (sweep / "multirun.yaml").write_text(EXPECTED_JOBS.format("random,sensitivity,lrp_eps,deconvnet,gradient")
                                         .replace("task: []", "task: [dataset=toyset]"))
    out = root / "report"
    written = make_report(sweep, out, n_boot=50, formats=("png",), grid_images=GRID)
    return out, written


def test_the_page_is_written_and_self_contained(report):
    out, written = report
    page = out / "index.html"
    assert written["index"] == [page]
    text = page.read_text(encoding="utf-8")
    assert "<script>" in text and "<style>" in text
    # fully offline: no resource from the network (nor any external file): scripts, styles, images inline
    assert not re.search(r"""<(script|link|img|iframe|source)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", text,
                         re.I)
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", text, re.I) and not re.search(r"<link\b", text, re.I)
    assert not re.search(r"""\b(src|href)\s*=\s*["'](?!data:|#)""", text, re.I)
    assert not re.search(r"url\((?!#|data:)", text)
    assert page.stat().st_size < 1_500_000


def _rows(text: str, table: str) -> list[dict]:
    """Per <tr> of one table of the page: its data-run, data-quantity and the mean cell's value and text."""
    body = text.split(f'data-table="{table}"', 1)[1].split("</table>", 1)[0]
    rows = []
    for tr in re.findall(r"<tr [^>]*data-run=.*?</tr>", body, re.S):
        run = re.search(r'data-run="([^"]*)"', tr).group(1)
        quantity = re.search(r'data-quantity="([^"]*)"', tr).group(1)
        mean = re.search(r'class="num mean" data-value="([^"]*)" data-ci-low="([^"]*)" data-ci-high="([^"]*)">'
                         r"([^<]*)<", tr)
        rows.append({"run": run, "quantity": quantity, "mean": mean.group(1), "ci_low": mean.group(2),
                     "ci_high": mean.group(3), "text": mean.group(4), "best": 'class="best"' in tr})
    return rows


@pytest.mark.parametrize("name", ["summary_table", "faithfulness_table"])
def test_the_page_shows_the_numbers_of_the_csv_files(report, name):
    """One source of truth: every row of the CSV is a row of the page, with the same mean and interval (as the
    CSV writes them) and the best mark of the Markdown table."""
    import html

    out, _ = report
    csv = pd.read_csv(out / f"{name}.csv")
    rows = _rows((out / "index.html").read_text(encoding="utf-8"), name)
    assert len(rows) == len(csv) > 0
    for r, (_, c) in zip(rows, csv.iterrows()):
        assert (html.unescape(r["run"]), r["quantity"]) == (c.run, c.quantity)
        for k in ("mean", "ci_low", "ci_high"):
            assert (float(r[k]) if r[k] else float("nan")) == pytest.approx(c[k], rel=0, abs=0, nan_ok=True)
    md = (out / f"{name}.md").read_text(encoding="utf-8")
    bold = set(re.findall(r"\*\*([^*]+)\*\*", md))
    assert {html.unescape(r["text"]).replace("−", "-") for r in rows if r["best"]} == bold
    if name == "summary_table":
        assert sorted(csv.method) == sorted(METHODS * len(DATASETS))


def test_no_html_writes_no_page(tmp_path):
    make_run(tmp_path / "runs" / "a", "lrp_eps", complexity=False, heatmaps=None)
    make_run(tmp_path / "runs" / "b", "sensitivity", complexity=False, heatmaps=None)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text("an earlier report's page")
    written = make_report(tmp_path / "runs", tmp_path / "out", n_boot=50, formats=("png",), html=False)
    assert "index" not in written and not (tmp_path / "out" / "index.html").exists()


# ------------------------------------------------------------------------------------------------- browser


def chromium() -> str | None:
    """Debian's chromium (or $BENCH_CHROMIUM)."""
    for candidate in (os.environ.get("BENCH_CHROMIUM"), "chromium", "chromium-browser", "/usr/bin/chromium",
                      "/usr/lib/chromium/chromium"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    required = os.environ.get("BENCH_REQUIRE_BROWSER") == "1"
    exe = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        (pytest.fail if required else pytest.skip)("playwright is not installed (pip install -e '.[test]')")
    if exe is None:
        (pytest.fail if required else pytest.skip)(
            "no Chromium binary found (apt-get install chromium, or set BENCH_CHROMIUM): the explorer's browser "
            "tests need one")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, report):
    out, _ = report
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    pg.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: errors.append(f"request {r.url}") if not r.url.startswith(("file:", "data:"))
          else None)
    pg.goto((out / "index.html").as_uri())
    pg.wait_for_load_state("load")
    yield pg
    assert errors == []  # no console error or warning, no page error, no request to the network
    pg.close()


def visible_rows(pg, table: str) -> list[str]:
    return pg.eval_on_selector_all(f'table[data-table="{table}"] tbody tr',
                                   "rows => rows.filter(r => !r.hidden).map(r => r.dataset.run)")


def mean_values(pg, table: str) -> list[float]:
    return pg.eval_on_selector_all(f'table[data-table="{table}"] tbody tr:not([hidden]) td.mean',
                                   "cells => cells.map(c => parseFloat(c.dataset.value))")


def test_tables_rows_sorting_and_filtering(page, report):
    out, _ = report
    assert len(visible_rows(page, "summary_table")) == len(METHODS) * len(DATASETS)
    assert len(visible_rows(page, "faithfulness_table")) == len(pd.read_csv(out / "faithfulness_table.csv"))
    before = mean_values(page, "summary_table")
    head = page.locator('#summary_table th button.sort', has_text="Mean [95% CI]")
    head.click()
    assert mean_values(page, "summary_table") == sorted(before)
    assert page.locator("#summary_table th[aria-sort=ascending]").count() == 1
    head.click()
    descending = mean_values(page, "summary_table")
    assert descending == sorted(before, reverse=True) and descending != before
    page.locator('#summary_table th button.sort', has_text="Method").click()
    labels = page.eval_on_selector_all('table[data-table="summary_table"] tbody tr td:first-child',
                                       "cells => cells.map(c => c.textContent)")
    assert labels == sorted(labels, key=str.lower)
    # filter: one dataset leaves its methods
    page.select_option("#summary_table-filter-dataset", "toyset")
    rows = visible_rows(page, "summary_table")
    assert len(rows) == len(METHODS) and all("toyset" in r for r in rows)
    assert page.locator("#summary_table .count").inner_text() == f"{len(METHODS)} of {len(METHODS) * 2} rows shown"
    page.select_option("#summary_table-filter-dataset", "")
    assert len(visible_rows(page, "summary_table")) == len(METHODS) * len(DATASETS)
    # the faithfulness table by protocol
    page.select_option("#faithfulness_table-filter-protocol", "irof")
    quantities = page.eval_on_selector_all('table[data-table="faithfulness_table"] tbody tr:not([hidden])',
                                           "rows => rows.map(r => r.dataset.quantity)")
    assert quantities and set(quantities) == {"irof_morf"}


def test_gallery_has_every_method_and_image(page):
    blocks = page.locator(".gallery-block")
    assert blocks.count() == len(DATASETS)
    for i in range(len(DATASETS)):
        block = blocks.nth(i)
        assert block.locator("button.cell img").count() == len(METHODS) * GRID
        assert block.locator("img.input").count() == GRID
        runs = block.locator("tbody tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)")
        assert len(runs) == len(METHODS)
    complete = page.eval_on_selector_all(".gallery img", "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
    assert complete
    cell = blocks.nth(0).locator("button.cell").nth(1)
    assert "aopc_morf_minus_random" in cell.get_attribute("title")
    cell.click()
    detail = blocks.nth(0).locator(".detail")
    assert detail.locator("img").count() == 2  # the heatmap and its input image
    assert detail.locator("th", has_text="aopc_morf_minus_random").count() == 1


# (an SVG group: displayed unless it or a parent is display: none; drawn when it has a bounding box)
SHOWN = ("els => els.length > 0 && els.some(e => e.getBBox().width > 0) && els.every(e => "
         "getComputedStyle(e).display !== 'none' && getComputedStyle(e.ownerSVGElement).display !== 'none')")
HIDDEN = "els => els.length > 0 && els.every(e => getComputedStyle(e).display === 'none')"


def test_a_method_checkbox_hides_its_curves(page):
    assert page.eval_on_selector_all("svg .bm-lrp_eps", SHOWN)
    assert page.eval_on_selector_all("svg .bm-random-order", SHOWN)
    page.uncheck("#curves-lrp_eps")
    assert page.eval_on_selector_all("svg .bm-lrp_eps", HIDDEN)
    assert page.eval_on_selector_all("svg .bm-sensitivity", SHOWN)
    page.check("#curves-lrp_eps")
    assert page.eval_on_selector_all("svg .bm-lrp_eps", SHOWN)


def test_provenance_lists_runs_failed_and_missing_jobs(page):
    runs = page.eval_on_selector_all("table.provenance tbody tr", "rows => rows.map(r => r.dataset.run)")
    assert len(runs) == len(METHODS) * len(DATASETS)
    assert "torch_version" in page.locator("table.provenance thead").inner_text()
    jobs = page.locator("table.jobs")
    assert "CUDA out of memory" in jobs.locator('tr[data-status="failed"]').inner_text()
    missing = jobs.locator('tr[data-status="missing"]')
    assert missing.count() == 1 and "method=gradient" in missing.inner_text()
    assert page.locator("#warnings li").count() >= 1


def test_screenshot(page, tmp_path):
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
