"""Protocols as plug-ins (bench/protocols/): the README's example protocol runs from BENCH_PLUGIN_PATH, a protocol
reads only the shared state it declares, a run resumes after another protocol's code or settings changed, and a
protocol's declarations reach the summary, the printed table and the report."""

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import protocols
from bench.errors import BenchError
from bench.run import identity
from bench.run.job import run
from bench.run.spec import build_spec

from conftest import FAST_MODEL, composed

ROOT = Path(__file__).resolve().parent.parent
SMALL = [*FAST_MODEL, "n_images=6", "steps=3", "repeats=1", "bootstrap=50", "method=gradient_x_input"]


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch, cache_dir):
    """No plug-in folder and the code hashed (not vouched for) during a test; afterwards the protocols' config
    blocks registered again without the test's plug-ins, so that later tests compose without them."""
    from bench.run.config import register_protocols

    monkeypatch.delenv("BENCH_PLUGIN_PATH", raising=False)
    monkeypatch.delenv("BENCH_CODE_VERSION", raising=False)
    yield
    monkeypatch.undo()
    register_protocols()


def readme_protocol() -> tuple[str, str]:
    """(file name, text) of the first python block of README's "Adding a protocol", named by its first line."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Adding a protocol"):]
    block = re.search(r"```python\n(# protocols/(\w+)\.py\n.*?)```", section, re.S)
    return block.group(2), block.group(1)


def plugin_folder(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "my_plugins"
    (folder / "protocols").mkdir(parents=True, exist_ok=True)
    (folder / "protocols" / f"{name}.py").write_text(text)
    return folder


def test_the_readme_example_protocol_runs_from_the_plugin_path(tmp_path, monkeypatch):
    name, text = readme_protocol()
    assert name == "average_drop" and name not in protocols.SHIPPED
    assert not (ROOT / "bench" / "protocols" / f"{name}.py").exists()  # it is not shipped
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(plugin_folder(tmp_path, name, text)))
    assert name in protocols.available()
    job = tmp_path / "job"
    summary = run(composed([*SMALL, f"metrics=[aopc,{name}]", f"{name}.relevance=absolute"]), job)
    q = summary.set_index("quantity")
    assert {"average_drop", "increase_in_confidence"} <= set(q.index)
    assert (q.loc["average_drop", "n_images"], q.loc["increase_in_confidence", "n_images"]) == (6, 6)
    rows = pd.read_parquet(job / "average_drop.parquet")
    assert 0 <= rows.average_drop.min() and rows.average_drop.max() <= 1
    assert set(rows.increase_in_confidence) <= {0.0, 1.0}
    # the numbers are the definition's: the image shown through |h| / max|h|, the class probabilities
    from bench.models import load_model

    spec = build_spec(composed([*SMALL, f"metrics=[aopc,{name}]", f"{name}.relevance=absolute"]))
    model, data = load_model(spec), spec.dataset.obj
    items = [data.get(i) for i in range(6)]
    raw = torch.stack([r for _, r, _ in items])
    x = data.normalization.normalize(raw)
    with torch.no_grad():
        y_all = model(x).softmax(1)
        target = y_all.argmax(1)
        heat = spec.method.obj.attribute(model, x, target, None if False else _ctx(items, spec)).sum(1)
        e = heat.abs() / heat.abs().flatten(1).max(1).values.view(-1, 1, 1)
        o = model(data.normalization.normalize(raw * e[:, None])).softmax(1).gather(1, target[:, None])[:, 0]
    y = y_all.gather(1, target[:, None])[:, 0]
    np.testing.assert_allclose(rows.average_drop, ((y - o).clamp(min=0) / y).numpy(), rtol=1e-4, atol=1e-6)
    # unknown settings and values are one line, naming the protocol's keys
    with pytest.raises(BenchError, match=rf"unknown setting '{name}.foo'; valid {name} keys: relevance"):
        build_spec(composed([*SMALL, f"metrics=[aopc,{name}]", f"+{name}.foo=1"]))
    with pytest.raises(BenchError, match=rf"{name}.relevance must be one of positive, absolute"):
        build_spec(composed([*SMALL, f"metrics=[aopc,{name}]", f"{name}.relevance=signed"]))


def _ctx(items, spec):
    from bench.interfaces import Context

    return Context(image_ids=[i for i, _, _ in items], seed=spec.seed, normalization=spec.dataset.obj.normalization)


def test_a_protocol_reads_only_the_state_it_declares(tmp_path, monkeypatch):
    text = textwrap.dedent('''
        from dataclasses import dataclass
        from bench.protocols import Protocol

        @dataclass(frozen=True)
        class Sneaky(Protocol):
            title = "sneaky"
            def launch(self, batch):
                batch.pixel_orders  # not declared in needs
    ''')
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(plugin_folder(tmp_path, "sneaky", text)))
    with pytest.raises(RuntimeError, match="protocol 'sneaky' reads batch.pixel_orders but does not declare it"):
        run(composed([*SMALL, "metrics=[aopc,sneaky]"]), tmp_path / "job")


def test_a_protocol_file_must_be_a_frozen_dataclass_with_one_protocol(tmp_path, monkeypatch):
    text = textwrap.dedent('''
        from bench.protocols import Protocol, integer, setting

        class Loose(Protocol):
            size: int = setting(3, integer(low=1))
    ''')
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(plugin_folder(tmp_path, "loose", text)))
    with pytest.raises(BenchError, match=r"protocols/loose.py: decorate Loose with @dataclass\(frozen=True\)"):
        protocols.protocol_class("loose")


def test_a_run_resumes_after_another_protocols_code_or_settings_change(tmp_path, monkeypatch):
    """The identity of a run with metrics=[aopc] holds neither the settings nor the code of the protocols it does
    not compute; those of a protocol it computes are part of it."""
    import bench.run.job
    from bench.run.evaluate import Evaluator

    other = textwrap.dedent('''
        from dataclasses import dataclass
        from bench.protocols import Protocol, integer, setting

        @dataclass(frozen=True)
        class Other(Protocol):
            size: int = setting(3, integer(low=1))
            title = "other"
    ''')
    folder = plugin_folder(tmp_path, "other", other)
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(folder))
    launched, launch = [], Evaluator.launch

    def counted(self, image_ids, *args, **kwargs):
        launched.extend(image_ids)
        return launch(self, image_ids, *args, **kwargs)

    monkeypatch.setattr(Evaluator, "launch", counted)
    finish = bench.run.job._finish

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the end")

    def interrupted(overrides, run_dir):  # every block computed, the job killed before DONE
        monkeypatch.setattr(bench.run.job, "_finish", crash)
        with pytest.raises(RuntimeError):
            run(composed(overrides), run_dir)
        monkeypatch.setattr(bench.run.job, "_finish", finish)
        assert len(launched) == 6 and not (run_dir / "DONE").exists()
        launched.clear()

    job = [*SMALL, "block_size=2"]
    interrupted(job, tmp_path / "aopc")
    # another protocol's code and settings change: the finished blocks are continued, nothing is recomputed
    (folder / "protocols" / "other.py").write_text(other.replace("setting(3,", "setting(5,"))
    summary = run(composed([*job, "other.size=7", "irof.n_segments=50", "road.noise=0.5"]), tmp_path / "aopc")
    assert summary is not None and launched == [] and (tmp_path / "aopc" / "DONE").exists()

    # a protocol the run computes is part of its identity: its settings …
    (folder / "protocols" / "other.py").write_text(other)
    interrupted([*job, "metrics=[aopc,other]"], tmp_path / "other")
    with pytest.raises(BenchError, match=r"different configuration \(other.size=3 there, 7 now\)"):
        run(composed([*job, "metrics=[aopc,other]", "other.size=7"]), tmp_path / "other")
    # … and its code
    (folder / "protocols" / "other.py").write_text(other + "\n# edited\n")
    with pytest.raises(BenchError, match="results computed by different code"):
        run(composed([*job, "metrics=[aopc,other]"]), tmp_path / "other")
    assert launched == []

    spec = build_spec(composed([*job, "metrics=[aopc,other]"]))
    files = {f.name for f in identity.number_files(identity.plugin_files(*spec.protocols))}
    assert {"other.py", "aopc.py", "base.py"} <= files
    only = build_spec(composed(job))
    files = {f.name for f in identity.number_files(identity.plugin_files(*only.protocols))}
    assert "aopc.py" in files and not {"other.py", "irof.py", "road.py", "deletion.py", "srg.py"} & files
    assert "other" not in only.run_config() and "irof" not in only.run_config()
    assert spec.run_config()["other"] == {"size": 3}


def test_the_new_protocols_reach_the_summary_the_faithfulness_table_and_the_report(tmp_path):
    """Sensitivity-n and infidelity, added as one file each, land in summary.csv, in the faithfulness table with
    their declared direction, and as a report's --quantity — with no line of the report naming them."""
    from bench.report import make_report
    from bench.report.table import family_columns, lower_is_better

    base = [*SMALL, "n_images=5", "metrics=[aopc,sensitivity_n,infidelity]", "sensitivity_n.n=[20,200]",
            "sensitivity_n.subsets=6", "infidelity.samples=6"]
    for method in ("random", "gradient_x_input"):
        summary = run(composed([*base, f"method={method}"]), tmp_path / method)
        q = set(summary.quantity)
        assert {"sensitivity_n", "sensitivity_n_random", "sensitivity_n_minus_random", "infidelity",
                "infidelity_random", "infidelity_minus_random"} <= q
    assert {"sensitivity_n", "infidelity"} <= set(family_columns())
    assert lower_is_better("infidelity") and not lower_is_better("sensitivity_n")
    written = make_report(tmp_path, tmp_path / "report", n_boot=50, formats=("png",), quantity="infidelity")
    family = pd.read_csv(tmp_path / "report" / "faithfulness_table.csv")
    assert {"aopc_morf_minus_random", "sensitivity_n", "infidelity"} == set(family.quantity)
    text = (tmp_path / "report" / "faithfulness_table.md").read_text()
    assert "Sensitivity-n (mean r over n)" in text.splitlines()[0] and "infidelity" in text.splitlines()[0]
    assert "infidelity: lower" in text
    # the gradient × input heatmap of a trained CNN is more faithful than a random one by both
    by = family.set_index(["quantity", "method"])["mean"]
    assert by[("sensitivity_n", "gradient_x_input")] > by[("sensitivity_n", "random")]
    summary_table = pd.read_csv(tmp_path / "report" / "summary_table.csv")
    assert set(summary_table.quantity) == {"infidelity"} and "summary_table" in written


def test_a_protocol_named_like_a_setting_of_the_run_is_refused(tmp_path, monkeypatch):
    text = textwrap.dedent('''
        from dataclasses import dataclass
        from bench.protocols import Protocol

        @dataclass(frozen=True)
        class Patch(Protocol):
            title = "patch"
    ''')
    monkeypatch.setenv("BENCH_PLUGIN_PATH", str(plugin_folder(tmp_path, "patch", text)))
    with pytest.raises(BenchError, match="protocols/patch.py: 'patch' is already a setting of the run"):
        build_spec(composed(SMALL))
