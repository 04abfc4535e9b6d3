"""``report``: inspection case sheets of a reviewed detect run (tests/report_data.py) — the HTML page is
self-contained with one section per flag in order of priority, the PDF has a summary page and a page per flag with
Vietnamese text intact, work_orders.csv has its columns, BOM and statuses; bad inputs get one error line, their
documented exit code, and nothing written."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pypdf
import pytest
from click.testing import CliRunner

from changewatch.cli import cli
from changewatch.rs.report.cases import sort_by_priority, status
from changewatch.rs.report.write import REPORT_FILES, WORK_ORDER_COLUMNS
from tests.data import AS_OF, UTM48N, rule_case
from tests.report_data import BEN_NGHE, DA_KAO, FLAGS, NOTE, ORDER, PERMIT, STATUSES, make_run
from tests.review_data import pixel_box
from tests.test_cli import readme_bad_inputs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REVIEWER = "Nguyễn Văn An"


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, report folder) after ``report RUN -o REPORT`` succeeded."""
    root = tmp_path_factory.mktemp("report")
    run = make_run(root)
    result = CliRunner().invoke(cli, ["report", str(run), "-o", str(root / "report")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "4 flags reported" in result.output
    return run, root / "report"


class Page(HTMLParser):
    """What a test needs of an HTML page: flag sections in order, image sources, tags that load other files, text."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: list[int] = []
        self.images: list[str] = []
        self.loading: list[str] = []  # script, link, iframe, object... tags: a self-contained page has none
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("class") == "flag":
            self.flags.append(int(str(a["id"]).removeprefix("flag-")))
        if tag == "img":
            self.images.append(str(a.get("src")))
        if tag in ("script", "link", "iframe", "object", "embed", "video", "audio", "source"):
            self.loading.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_one_section_per_flag_by_priority(reported: tuple[Path, Path]) -> None:
    _, out = reported
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    html = (out / "report.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    assert page.flags == ORDER
    assert len(page.images) == 1 + len(ORDER)  # the map, then each flag's chips
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert page.loading == []
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    text = " ".join(page.text)
    for vietnamese in (BEN_NGHE, DA_KAO, PERMIT, NOTE, REVIEWER):
        assert vietnamese in text
    assert f"P-001 · {BEN_NGHE} (1,800 m² of the flag)" in text  # each parcel with its ward and overlap


def test_html_escapes_values(reported: tuple[Path, Path], tmp_path: Path) -> None:
    """A note holding markup is shown as text, never run: the template autoescapes."""
    from changewatch.rs.review import load_run, record_decisions

    run, _ = reported
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record_decisions(load_run(copy), {4: ("needs_visit", "<script>alert(1)</script>")}, reviewer="An",
                     at="2024-05-02T14:03:00+07:00")
    result = CliRunner().invoke(cli, ["report", str(copy), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    orders = pd.read_csv(tmp_path / "report" / "work_orders.csv", encoding="utf-8-sig")
    assert orders.set_index("id").loc[4, "status"] == "visit"


def test_pdf_summary_page_then_a_page_per_flag(reported: tuple[Path, Path]) -> None:
    _, out = reported
    reader = pypdf.PdfReader(out / "report.pdf")
    assert len(reader.pages) == 1 + len(ORDER)
    texts = [page.extract_text() for page in reader.pages]
    summary = " ".join(texts[0].split())
    for vietnamese in (BEN_NGHE, DA_KAO):
        assert vietnamese in summary
    assert "NO_PERMIT 3" in summary and "NO_BUILD_ZONE 1" in summary and "EXCEEDS_PERMIT 1" in summary
    assert f"{BEN_NGHE} 2" in summary and f"{DA_KAO} 2" in summary
    for priority, (change_id, text) in enumerate(zip(ORDER, texts[1:], strict=True), start=1):
        assert f"Priority {priority}: change {change_id}" in text
        assert f"{100 * FLAGS[change_id][0][2] ** 2:,.0f} m²" in text
    by_id = dict(zip(ORDER, texts[1:], strict=True))
    assert PERMIT in by_id[2] and NOTE in by_id[1] and REVIEWER in by_id[1]
    assert "not reviewed" in by_id[3]
    fonts = {str(f.get_object()["/BaseFont"]) for page in reader.pages for f in page["/Resources"]["/Font"].values()}
    assert fonts and all("DejaVuSans" in f for f in fonts)  # embedded DejaVu Sans, not a viewer's substitute


def test_work_orders(reported: tuple[Path, Path]) -> None:
    _, out = reported
    raw = (out / "work_orders.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads the file as UTF-8
    orders = pd.read_csv(out / "work_orders.csv", encoding="utf-8-sig", keep_default_na=False)
    assert tuple(orders.columns) == WORK_ORDER_COLUMNS
    assert list(orders["id"]) == ORDER and list(orders["priority"]) == [1, 2, 3, 4]
    rows = orders.set_index("id")
    assert {i: rows.loc[i, "status"] for i in ORDER} == STATUSES
    assert rows.loc[3, "ward"] == f"{BEN_NGHE}; {DA_KAO}" and rows.loc[3, "parcel"] == "P-001; P-002"
    assert rows.loc[4, "ward"] == "" and rows.loc[2, "reason"] == "EXCEEDS_PERMIT"
    assert (orders["assignee"] == "").all()
    import geopandas as gpd

    centres = gpd.GeoSeries([pixel_box(*FLAGS[i][0]) for i in ORDER], crs=UTM48N).centroid.to_crs(4326)
    assert orders["lon"].tolist() == pytest.approx(centres.x.tolist(), abs=1e-7)
    assert orders["lat"].tolist() == pytest.approx(centres.y.tolist(), abs=1e-7)


def test_priority_rule_and_status() -> None:
    table = pd.DataFrame({"change_id": [1, 2, 3, 4, 5, 6],
                          "worst_reason": ["PERMIT_EXPIRED", "NO_PERMIT", "NO_PERMIT", "NO_BUILD_ZONE", "NO_PERMIT",
                                           "NO_PERMIT"],
                          "area_m2": [9000.0, 300.0, 500.0, 100.0, 500.0, 500.0],
                          "max_prob": [0.99, 0.9, 0.6, 0.5, 0.8, 0.8]})
    ordered = sort_by_priority(table)
    # most severe reason first; then larger area; then higher probability; then lower change_id
    assert list(ordered["change_id"]) == [4, 5, 6, 3, 2, 1]
    assert list(ordered["priority"]) == [1, 2, 3, 4, 5, 6]
    assert [status(d) for d in (None, float("nan"), "needs_visit", "confirm", "dismiss")] == \
        ["open", "open", "visit", "confirmed", "closed"]


def _crosscheck_run(root: Path) -> Path:
    changes, _, _ = rule_case()
    changes.to_file(root / "changes.gpkg")
    result = CliRunner().invoke(cli, ["crosscheck", str(root / "changes.gpkg"), "-o", str(root / "cc"), "--as-of",
                                      AS_OF.isoformat()])
    assert result.exit_code == 0, result.output
    return root / "cc"


def _moved_scene(run: Path, root: Path) -> Path:
    copy = root / "moved"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text(encoding="utf-8"))
    summary["inputs"]["after"] = str(root / "gone" / "after.tif")
    (copy / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return copy


def _holding(run: Path, copy: Path, given: Path) -> Path:
    """``given``, a folder holding a copy of ``run`` at ``copy`` (a monitor store's pair, a batch's area)."""
    shutil.copytree(run, copy)
    return given


def test_the_demo_hint_is_given_for_a_missing_demo_folder_only(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from changewatch.rs.review import not_a_run

    monkeypatch.chdir(tmp_path)
    assert not_a_run(Path("out/demo")) == "out/demo does not exist; run `python cli.py demo` first"
    demo = tmp_path / "out" / "demo"
    assert not_a_run(demo) == f"{demo} does not exist; run `python cli.py demo` first"
    assert not_a_run(Path("out/ward7")) == "out/ward7 does not exist"
    (tmp_path / "tiles").mkdir()
    assert "demo" not in not_a_run(Path("tiles"))


def _changed_scene(run: Path, root: Path) -> Path:
    """A copy of ``run`` whose AFTER file was overwritten by BEFORE since it ran (same path, same grid).

    The copy's summary names ``root/after.tif`` with the checksum the run recorded for its AFTER, and
    that file now holds BEFORE's bytes: as if BEFORE had been copied over the run's AFTER.
    """
    copy = root / "changed"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text(encoding="utf-8"))
    after = str((root / "after.tif").resolve())
    shutil.copyfile(summary["inputs"]["before"], after)
    summary["inputs"]["files"][after] = summary["inputs"]["files"][summary["inputs"]["after"]]
    summary["inputs"]["after"] = after
    (copy / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return copy


# README "Bad inputs" row → (RUN_DIR, OUTDIR) from (run, tmp_path), exit code, words of the error line
BAD = {
    "`report` of a folder that does not exist": (lambda run, tmp: (tmp / "nowhere", tmp / "report"), 3,
                                                  "does not exist"),
    "`report` of a folder that is not a detect run folder": (
        lambda run, tmp: (tmp, tmp / "report"), 3,
        "is not a detect run folder (no summary.json): give the folder detect wrote (its -o OUTDIR)"),
    "`report` of a monitor store (STORE, not `STORE/pairs/<pair>`)": (
        lambda run, tmp: (_holding(run, tmp / "store" / "pairs" / "2024-01-10_2024-05-02", tmp / "store"),
                          tmp / "report"), 3,
        "is a monitor store, not a detect run folder: report one of its pairs"),
    "`report` of a folder of run folders (a batch OUTDIR)": (
        lambda run, tmp: (_holding(run, tmp / "batch" / "ward7", tmp / "batch"), tmp / "report"), 3,
        "holds detect run folders: report one of them, e.g."),
    "`report` of a cross-check run folder": (lambda run, tmp: (_crosscheck_run(tmp), tmp / "report"), 3,
                                             "is a crosscheck run folder: report needs a detect run folder"),
    "`report` of a run whose scene is no longer where it ran": (lambda run, tmp: (_moved_scene(run, tmp),
                                                                                   tmp / "report"), 3, "after.tif"),
    "`report` of a run whose scene file changed since it ran (BEFORE copied over AFTER: same path, same grid)": (
        lambda run, tmp: (_changed_scene(run, tmp), tmp / "report"), 3,
        "after.tif changed since the run: checksum differs; re-run detect"),
    "`report` of a run whose `review` layer holds a decision other than `confirm`, `dismiss`, `needs_visit`": (
        lambda run, tmp: (_bad_decision(run, tmp), tmp / "report"), 5, "unknown decision 'dismissed' (change_id 1)"),
    "`report RUN -o RUN/sub` (the report inside the run folder)": (lambda run, tmp: (run, run / "report"), 8,
                                                                    "is inside the run folder"),
    "`report RUN -o RUN`": (lambda run, tmp: (run, run), 8, "is the output folder"),
    "`report -o` a folder holding files `report` did not write": (lambda run, tmp: (run, _foreign(tmp)), 8,
                                                                   "holds files changewatch did not write (notes.txt)"),
}


def _bad_decision(run: Path, root: Path) -> Path:
    """A copy of ``run`` whose review layer was edited by hand: flag 1 'dismissed'."""
    import geopandas as gpd

    from changewatch.rs.io.vector import write_gpkg

    copy = root / "edited"
    shutil.copytree(run, copy)
    review = gpd.read_file(copy / "flagged.gpkg", layer="review")
    review.loc[review["change_id"] == 1, "decision"] = "dismissed"
    write_gpkg(review, copy / "flagged.gpkg", "review")
    return copy


def _foreign(tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    return tmp / "mine"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("row", list(BAD))
def test_readme_bad_inputs_rows_of_report(row: str, reported: tuple[Path, Path], tmp_path: Path) -> None:
    make, code, words = BAD[row]
    assert readme_bad_inputs()[row] == str(code)
    run, _ = reported
    run_before = _snapshot(run)
    given, out = make(run, tmp_path)
    out_before = _snapshot(out) if out.is_dir() else None
    result = CliRunner().invoke(cli, ["report", str(given), "-o", str(out)])
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert _snapshot(run) == run_before  # nothing written into the run
    assert (_snapshot(out) if out.is_dir() else None) == out_before  # the output folder as it was, or absent
    assert not list(out.parent.glob(f".{out.name}.staging-*"))


def test_report_command_uses_the_library_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without options, report builds exactly the configuration the library defaults to (rs.config.ReportConfig)."""
    from changewatch.rs.config import ReportConfig
    from changewatch.rs.report import write

    seen: list[object] = []

    def capture(config: object) -> None:
        seen.append(config)
        raise RuntimeError("captured")

    monkeypatch.setattr(write, "write_report", capture)
    result = CliRunner().invoke(cli, ["report", "run", "-o", "out"])
    assert str(result.exception) == "captured"
    assert seen == [ReportConfig("run", "out")]


def test_chip_outline_is_the_flag_in_chip_pixels(reported: tuple[Path, Path]) -> None:
    """Flag 3 covers rows 60–65, cols 10–15 of the grid; its chip (12 px around, cut at the scene's left edge)
    starts at row 48, col 0, so the outline spans x 10–16, y 12–18 in the chip's pixels."""
    from changewatch.rs.review import flag_chip, load_run

    chip = flag_chip(load_run(reported[0]), 3, pad_px=12)
    assert chip.before.shape == chip.after.shape == (30, 28, 3) and chip.prob.shape == (30, 28)
    assert chip.outline.bounds == pytest.approx((10, 12, 16, 18), abs=1e-6)


def test_counts_by_ward() -> None:
    """A flag counts once per ward it lies in; flags on no parcel, and on parcels naming no ward, are told apart."""
    from changewatch.rs.report.cases import BLANK_WARD, NO_WARD, _by_ward

    table = pd.DataFrame({"ward": [f"{BEN_NGHE}; {DA_KAO}", BEN_NGHE, "", ""],
                          "parcel_ids": ["P-001; P-002", "P-001", "", "P-009"]})
    assert _by_ward(table) == {BEN_NGHE: 2, DA_KAO: 1, BLANK_WARD: 1, NO_WARD: 1}


def test_report_of_a_run_recording_no_checksums_warns_per_scene_and_reports(reported: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    """A run of an earlier version recorded no checksums: its scenes cannot be checked; each gets a warning line."""
    row = "`report` of a run whose summary.json records no checksums (an earlier version)"
    assert readme_bad_inputs()[row] == "0"
    run, _ = reported
    copy = shutil.copytree(run, tmp_path / "old")
    summary = json.loads((copy / "summary.json").read_text(encoding="utf-8"))
    del summary["inputs"]["files"]
    (copy / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    result = CliRunner().invoke(cli, ["report", str(copy), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert [w.split()[1] for w in warnings] == [summary["inputs"]["before"], summary["inputs"]["after"]]
    assert all("not checked against the run: it recorded no checksum" in w for w in warnings)
    assert (tmp_path / "report" / "report.html").is_file()
