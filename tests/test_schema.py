"""The results files' shapes (reportgen/schema.py): what each spec accepts and refuses, and
that the error names the place."""
import math

import pytest

from reportgen.schema import (ANY, FRACTION, List, Map, Num, Opt, SchemaError, check, image,
                              label, metrics)


@pytest.mark.parametrize("spec,good,bad", [
    (int, [0, -3, 10**20], [True, 1.0, "1", None, [1]]),
    (float, [0, 1.5, -2, 10**20], [True, math.nan, math.inf, -math.inf, "1", None]),
    (str, ["", "a"], [1, None, ["a"], {"a": 1}]),
    (bool, [True, False], [0, 1, "true", None]),
    (dict, [{}, {"a": 1}], [[], "x", None]),
    (list, [[], [1]], [{}, "x", None]),
    (FRACTION, [0, 0.5, 1], [-0.01, 1.01, math.nan, True]),
    (Num(finite=False), [math.nan, math.inf, 3], ["nan", None, False]),
    (Opt(int), [None, 3], ["3", 1.5]),
    ([float], [[], [1, 2.5]], [[1, "2"], [math.nan], "12", {"0": 1}]),
    (List(int, 2), [[1, 2], [1, 2, 3]], [[1], [], [1, "2"]]),
    ({"a": int, "b?": str}, [{"a": 1}, {"a": 1, "b": "x", "c": None}],
     [{"b": "x"}, {"a": "1"}, {"a": 1, "b": 2}, [("a", 1)]]),
    (Map(List(str, 1)), [{}, {"x": ["a"]}], [{"x": []}, {"x": "a"}, [["a"]]]),
    (ANY, [None, math.nan, object()], []),
])
def test_each_spec_accepts_its_values_and_refuses_the_rest(spec, good, bad):
    for v in good:
        check(v, spec, "f")
    for v in bad:
        with pytest.raises(SchemaError):
            check(v, spec, "f")


def test_the_error_names_the_place_and_what_was_found():
    spec = {"models": Map({"val": {"accuracy": [FRACTION]}})}
    obj = {"models": {"resnet": {"val": {"accuracy": [0.5, 0.4, "x"]}}}}
    with pytest.raises(SchemaError, match=r"^models\.resnet\.val\.accuracy\[2\] as a number "
                       r"from 0 to 1 \(found 'x'\)$"):
        check(obj, spec)
    with pytest.raises(SchemaError, match=r"^the field models\.resnet\.val$"):
        check({"models": {"resnet": {}}}, spec)
    with pytest.raises(SchemaError, match=r"^its top level as a table \(found a list\)$"):
        check([], spec)
    with pytest.raises(SchemaError, match=r"as a list of numbers \(found null\)"):
        check({"a": None}, {"a": [float]})
    with pytest.raises(SchemaError, match=r"a as a finite number \(found nan\)"):
        check({"a": math.nan}, {"a": float})
    with pytest.raises(SchemaError, match=r"a as a list of at least 2 items \(found 1\)"):
        check({"a": [1]}, {"a": List(int, 2)})


def test_images_labels_and_metrics():
    img = [[[0] * 32 for _ in range(32)] for _ in range(3)]
    image(img, "im")
    for bad in ([[[0] * 32 for _ in range(32)]],                      # one channel
                [[[0] * 31 for _ in range(32)] for _ in range(3)],     # 32 x 31
                [[[256] * 32 for _ in range(32)] for _ in range(3)],   # out of range
                [[[0.5] * 32 for _ in range(32)] for _ in range(3)],   # not integers
                [[[True] * 32 for _ in range(32)] for _ in range(3)],  # booleans
                [[[0] * 32 for _ in range(32)], [[0] * 32], [[0]]],    # ragged
                [[[10**30] * 32 for _ in range(32)] for _ in range(3)], "x", None, []):
        with pytest.raises(SchemaError, match=r"^im as an image \(3 x 32 x 32 integers"):
            image(bad, "im")
    label(9, "y", list("abcdefghij"))
    for bad in (10, -1, True, 1.0, None):
        with pytest.raises(SchemaError, match=r"^y as a class index from 0 to 9"):
            label(bad, "y", list("abcdefghij"))
    m = {k: [1.0, math.nan] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")}
    m["epoch"] = [1.0, 2.0]
    metrics(m, "m")
    with pytest.raises(SchemaError, match=r"^2 values \(one per epoch\) in m\.lr \(found 1\)$"):
        metrics({**m, "lr": [0.1]}, "m")
    with pytest.raises(SchemaError, match="the field m.val_acc"):
        metrics({k: v for k, v in m.items() if k != "val_acc"}, "m")
    with pytest.raises(SchemaError, match="at least 1 epoch"):
        metrics({k: [] for k in m}, "m")


# --- every field of every study's results, forged --------------------------------------------
import json  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from reportgen.cli import app  # noqa: E402

from helpers import overrides_to_args, tiny_overrides, write_image_folder  # noqa: E402

runner = CliRunner()
WRONG = (None, "x", -1, 1.5, 10**9, [], [0], {}, True, math.nan, math.inf)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forged")
    out = tmp / "out"
    overrides = {**tiny_overrides(write_image_folder(tmp / "data"), out),
                 "shuffle.mlp_seeds": [42], "report.formats": ["tex"]}
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    return overrides, out


def field_paths(obj, at=(), depth=0):
    """Every key of the tables and the first item of every list, down to `depth` 5."""
    if depth > 5 or not isinstance(obj, (dict, list)):
        return
    for k, v in (obj.items() if isinstance(obj, dict) else [(0, obj[0])] if obj else []):
        if at == () and k in ("checksum", "study"):
            continue
        yield at + (k,)
        yield from field_paths(v, at + (k,), depth + 1)


def forged(good: dict, n_paths: int):
    """(place, results) with one field replaced by a value of another kind, or deleted: at
    `n_paths` places drawn from every field (the same ones each time)."""
    import random

    paths = list(field_paths(good))
    for path in random.Random(0).sample(paths, min(n_paths, len(paths))):
        for value in (*WRONG, "<deleted>"):
            blob = json.loads(json.dumps(good))
            parent = blob
            for k in path[:-1]:
                parent = parent[k]
            if value == "<deleted>":
                if not isinstance(parent, dict):
                    continue
                del parent[path[-1]]
            elif parent[path[-1]] == value or value is math.nan and parent[path[-1]] != parent[path[-1]]:
                continue
            else:
                parent[path[-1]] = value
            yield ".".join(map(str, path)) + f" = {value!r}", blob


@pytest.mark.parametrize("downstream", [
    "facts",
    pytest.param("figures and report", marks=pytest.mark.slow),
])
def test_a_forged_results_file_is_refused_in_one_line_or_read_in_full(finished, tmp_path,
                                                                        downstream):
    """A results file that passes its checksum (anyone can recompute it) with one field of a
    study's file replaced by a value of another kind, or deleted: reading it either refuses it
    in one line (MissingResults) or what reads it next works: the facts and the command's
    summary, and (slow) the figures and the report's text. 25 (12) fields a study, drawn once."""
    from reportgen.config import load_experiment
    from reportgen.errors import UserError
    from reportgen.experiments import studies
    from reportgen.files import MissingResults, seal
    from reportgen.report import build_context, render_html

    overrides, out = finished
    cfg = load_experiment(None, overrides)
    results_dir, figures_dir = out / cfg.name, out / "figures"
    accepted, refused = [], 0
    for st in studies():
        path = st.results_path(results_dir)
        good = path.read_text()
        try:
            for where, blob in forged(json.loads(good), 25 if downstream == "facts" else 12):
                path.write_text(json.dumps(seal(blob)))
                try:
                    res = st.load(results_dir)
                except MissingResults as e:
                    assert "\n" not in str(e) and str(results_dir) in str(e), (where, e)
                    refused += 1
                    continue
                accepted.append(f"{st.name}: {where}")
                try:
                    st.facts(res), st.summary(res)
                    if downstream != "facts":
                        st.draw(res, results_dir, tmp_path)
                        render_html(build_context(cfg, results_dir, figures_dir))
                except UserError as e:  # refused later in one line (another file disagrees)
                    assert "\n" not in str(e), (where, e)
                except Exception as e:  # noqa: BLE001 - the point of the test
                    raise AssertionError(f"{st.name}: {where}: {type(e).__name__}: {e}") from e
        finally:
            path.write_text(good)
    assert accepted and refused > len(accepted)  # names, paths, speeds: any value will do
