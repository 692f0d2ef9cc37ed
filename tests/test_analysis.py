"""The statistics on inputs with known answers, and the facts and words that follow them,
from crafted results files (per-image predictions made to order)."""
import re

import numpy as np
import pytest

from reportgen import analysis
from reportgen.analysis import circular_peaks, mean_in_range
from reportgen.experiments import get_study
from reportgen.report import change

from helpers import tiny_png

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- the statistics --------------------------------------------------------------------------

def test_wilson_interval_of_70_in_100():
    lo, hi = analysis.wilson(70, 100)
    assert lo == pytest.approx(0.6041, abs=1e-4) and hi == pytest.approx(0.7811, abs=1e-4)
    assert analysis.wilson(0, 10)[0] == 0.0 and analysis.wilson(10, 10)[1] == pytest.approx(1.0)


def test_t_interval_of_three_values():
    m, lo, hi = analysis.t_interval([1.0, 2.0, 3.0])  # sd 1, se 1/sqrt(3), t(0.975, 2) = 4.303
    assert m == 2.0 and hi - m == pytest.approx(4.3027 / 3 ** 0.5, abs=1e-4) and lo == 4 - hi
    with pytest.raises(ValueError):
        analysis.t_interval([1.0])


def test_mcnemar_on_a_hand_made_table():
    # 10 images only the first model gets right, 2 only the second: two-sided exact binomial
    # p = 2 * P(X <= 2 | n=12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    assert analysis.mcnemar(10, 2) == pytest.approx(2 * 79 / 4096)
    assert analysis.mcnemar(5, 5) == 1.0 and analysis.mcnemar(0, 0) == 1.0


def test_a_single_seed_paired_comparison_is_mcnemar_on_the_discordant_images():
    both = np.ones(80)
    a = np.concatenate([both, np.ones(10), np.zeros(2), np.zeros(8)])
    b = np.concatenate([both, np.zeros(10), np.ones(2), np.zeros(8)])
    c = analysis.compare([(1, a), (-1, b)])
    assert c["discordant"] == [10, 2] and c["diff"] == pytest.approx(0.08)
    assert c["p"] == pytest.approx(analysis.mcnemar(10, 2)) and c["significant"]
    assert c["lo"] < 0.08 < c["hi"] and c["test"] == "McNemar's exact test"
    flipped = analysis.compare([(-1, b), (1, a)])  # the order of the arms does not matter
    assert flipped["diff"] == pytest.approx(0.08) and flipped["discordant"] == [10, 2]


def _wald(a, b, c, d):
    n = a + b + c + d
    half = analysis._z() * max(b + c - (b - c) ** 2 / n, 0.0) ** 0.5 / n
    return (b - c) / n - half, (b - c) / n + half


def test_newcombes_paired_interval_covers_where_the_wald_interval_does_not():
    # Paired 0/1 outcomes on 40 images: both right 0.85, first only 0.10, second only 0.01.
    # The true difference is 0.09; count how often each interval covers it.
    rng = np.random.default_rng(0)
    tables = rng.multinomial(40, [0.85, 0.10, 0.01, 0.04], size=4000)
    truth = 0.09

    def coverage(interval):
        return np.mean([lo <= truth <= hi for lo, hi in (interval(*t) for t in tables)])

    assert coverage(analysis.newcombe_paired) >= 0.93
    assert coverage(_wald) < 0.92  # the reason it was replaced


def test_newcombes_paired_interval_on_edge_tables():
    lo, hi = analysis.newcombe_paired(0, 0, 0, 10)  # no image discordant: never width 0
    assert lo == pytest.approx(-hi) and hi == pytest.approx(analysis.wilson(0, 10)[1])
    assert analysis.newcombe_paired(10, 0, 0, 0) == pytest.approx((lo, hi))
    lo, hi = analysis.newcombe_paired(80, 10, 2, 8)
    assert lo < 0.08 < hi and 0 < lo
    assert analysis.newcombe_paired(80, 2, 10, 8) == pytest.approx((-hi, -lo))  # b, c swapped
    # At large counts it agrees with the Wald interval.
    assert analysis.newcombe_paired(40000, 3000, 2000, 5000) == pytest.approx(
        _wald(40000, 3000, 2000, 5000), abs=5e-4)


def test_a_comparison_without_spread_keeps_an_interval():
    # Every image differs by the same amount and the seeds agree: no t-interval, but the
    # exact sign-flip test and an interval of non-zero width.
    zeros = np.zeros((2, 10))
    same = analysis.compare([(1, zeros), (-1, zeros)])
    assert same["p"] == 1.0 and not same["significant"]
    assert same["hi"] == pytest.approx(analysis.wilson(0, 10)[1]) == -same["lo"]
    apart = analysis.compare([(1, np.ones((2, 10))), (-1, zeros)])
    assert apart["diff"] == 1.0 and apart["p"] == pytest.approx(2 / 2 ** 10) and apart["significant"]
    assert apart["lo"] < 1.0 == apart["hi"] and apart["test"] == "exact sign-flip test over images"
    two = analysis.compare([(1, np.ones((2, 2))), (-1, np.zeros((2, 2)))])
    assert two["p"] == 0.5 and not two["significant"]  # two images cannot show a difference
    # One arm that scores 0 on every image: the Wilson interval of 0 of 10, not [0, 0].
    one = analysis.compare([(1, np.zeros((1, 10)))])
    assert (one["lo"], one["hi"]) == pytest.approx(analysis.wilson(0, 10))


def test_one_accuracy_of_one_seed_gets_the_wilson_interval_the_tables_give_it():
    """The mean over rotated angles when one angle is rotated is an accuracy: a t-interval
    over its 0/1 values gave 4 of 10 [3.1, 76.9] next to the table's [16.8, 68.7]."""
    v = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=float)
    one = analysis.compare([(1, v)])
    assert one["diff"] == pytest.approx(0.4) and one["test"] == "Wilson score interval"
    assert (one["lo"], one["hi"]) == pytest.approx(analysis.wilson(4, 10))
    picked = analysis.compare([(1, v)], looks=35)
    assert (picked["lo"], picked["hi"]) == pytest.approx(analysis.wilson(4, 10, 0.05 / 35))
    # A mean over several angles (not 0/1), or two seeds: still the t-interval over images.
    assert analysis.compare([(1, v * 0.5)])["test"].startswith("paired t-test")
    assert analysis.compare([(1, np.vstack([v, v[:, ::-1]]))])["test"] != "Wilson score interval"


def test_a_difference_picked_as_the_worst_of_many_is_bonferroni_adjusted():
    # 0 against 7 discordant images: p = 0.016 for one pre-chosen comparison; picked as the
    # worst of 35 angles it is p = 0.55, and its interval widens to the 1 - 0.05/35 one.
    a = np.concatenate([np.ones(90), np.zeros(10)])
    b = np.concatenate([np.ones(83), np.zeros(17)])
    once = analysis.compare([(1, b), (-1, a)])
    worst = analysis.compare([(1, b), (-1, a)], looks=35, among="picking the worst of 35 angles")
    assert once["p"] == pytest.approx(analysis.mcnemar(0, 7)) and once["significant"]
    assert worst["p"] == pytest.approx(35 * once["p"]) and not worst["significant"]
    assert worst["lo"] < once["lo"] and worst["hi"] > once["hi"] and worst["diff"] == once["diff"]
    assert worst["test"] == ("McNemar's exact test, Bonferroni-adjusted for picking the worst "
                             "of 35 angles")
    assert (worst["lo"], worst["hi"]) == pytest.approx(
        analysis.newcombe_paired(83, 0, 7, 10, alpha=0.05 / 35))
    assert analysis.compare([(1, b), (-1, a)], looks=1000)["p"] == 1.0  # never above 1


def test_rotation_facts_adjust_for_the_angle_they_pick(tmp_path):
    f = get_study("rotation").facts(_sweep({"resnet": ("plain", PLAIN), "aug": (
        "augmented", [600, 550, 560, 550, 580, 550, 560, 550])}, EIGHT))
    plain = f["models"]["resnet"]["val"]
    assert plain["drop_to_worst"]["looks"] == 7  # the worst of the 7 rotated angles
    assert f["augmentation"]["at_worst"]["looks"] == 7
    assert "looks" not in f["augmentation"]["at_0"]  # 0° is chosen before looking


def test_differences_print_with_the_decimals_their_interval_needs():
    from reportgen.report import diff

    c = {"diff": 0.00014, "lo": -0.0004, "hi": 0.0007, "test": "t", "p": 0.3}
    assert diff(c) == "+0.01 points [−0.04, +0.07]; t, p = 0.30"  # not [−0.0, +0.0]
    c = {"diff": 0.0, "lo": -0.2775, "hi": 0.2775, "test": "t", "p": 1.0}
    assert diff(c) == "0.0 points [−27.8, +27.8]; t, p = 1.00"
    c = {"diff": 0.03, "lo": -0.005, "hi": 0.06, "test": "t", "p": 0.04, "significant": True}
    assert change(c) == "gains 3.0 points (95% CI −0.5 to 6.0; t, p = 0.04)"
    c = {"diff": -0.6, "lo": -0.639, "hi": -0.556, "test": "t", "p": 1e-5, "significant": True}
    assert change(c) == "costs 60.0 points (95% CI 55.6 to 63.9; t, p < 0.001)"


def test_seeds_widen_a_comparison():
    rng = np.random.default_rng(0)
    a = (rng.random((1, 2000)) < 0.7).astype(float)
    noisy = np.concatenate([a, 1 - a[:, ::-1], a])  # seeds that disagree a lot
    one = analysis.compare([(1, a), (-1, np.zeros((1, 2000)))])
    three = analysis.compare([(1, noisy), (-1, np.zeros((1, 2000)))])
    assert three["hi"] - three["lo"] > one["hi"] - one["lo"]
    assert "seeds" in three["test"]


def test_accuracy_with_and_without_seeds():
    one = analysis.accuracy([0.7], 100)
    assert one["std"] is None and one["seed_ci"] is None
    assert one["sampling"] == pytest.approx(list(analysis.wilson(70, 100)))
    three = analysis.accuracy([0.69, 0.70, 0.71], 5000)
    assert three["mean"] == pytest.approx(0.70) and three["std"] == pytest.approx(0.01)
    assert three["seed_ci"] == pytest.approx(list(analysis.t_interval([0.69, 0.70, 0.71])[1:]))


def test_peaks_and_ranges():
    angles = [0, 45, 90, 135, 180, 225, 270, 315]
    acc = [0.9, 0.3, 0.4, 0.2, 0.6, 0.2, 0.12, 0.3]
    assert circular_peaks(angles, acc) == [(180, 0.6), (90, 0.4)]  # not 315: 0° is higher
    above = [a > 0.5 for a in acc]
    assert circular_peaks(angles, acc, above) == [(180, 0.6)]
    assert mean_in_range(angles, acc, 40, 100) == pytest.approx(0.35)
    assert mean_in_range(angles, acc, 10, 20) is None


# --- crafted results files ---------------------------------------------------------------------

N = 1000
LABELS = np.arange(N) % 10


def preds(correct_idx) -> np.ndarray:
    """Predictions that are right exactly on the images `correct_idx`."""
    p = (LABELS + 1) % 10
    p[correct_idx] = LABELS[correct_idx]
    return p.astype(np.uint8)


def first(k):  # right on the first k images
    return preds(np.arange(k))


def rot_result():
    # Images right at each angle (the first k); confidences made to order.
    return _sweep({"resnet": ("plain", [800, 200, 500, 250]),
                   "resnet-rotaug": ("augmented", [600, 550, 580, 560])},
                  [0.0, 90.0, 180.0, 270.0], confidence=[0.9, 0.7, 0.8, 0.7])


def test_rotation_facts():
    f = get_study("rotation").facts(rot_result())
    b = f["models"]["resnet"]["val"]
    assert b["acc0"]["mean"] == 0.8 and b["worst"]["mean"] == 0.2 and b["worst_angle"] == 90.0
    assert b["drop_to_worst"]["diff"] == pytest.approx(-0.6) and b["drop_to_worst"]["significant"]
    assert b["drop_to_worst"]["discordant"] == [0, 600]  # 600 images lost, none gained
    assert [a for a, _ in b["peaks"]] == [180.0]  # accuracy comes back at 180 degrees
    assert b["mean_rotated"]["diff"] == pytest.approx((0.2 + 0.5 + 0.25) / 3)
    assert (b["rotated_from"], b["rotated_to"]) == (90.0, 270.0)
    assert b["confidence_worst"] == 0.7 and b["mean_confidence0"] == 0.9
    assert b["overconfident_at_worst"]  # 0.7 confidence against 20% accuracy
    assert b["band_kind"] == "sampling" and b["band"][0] == pytest.approx(b["acc0"]["sampling"])
    assert f["angle_step"] == 90.0 and f["aug_degrees"] == 180.0 and f["chance"] == 0.1
    assert (f["plain"], f["augmented"]) == ("resnet", "resnet-rotaug")
    a = f["augmentation"]
    assert a["at_0"]["diff"] == pytest.approx(-0.2) and a["at_0"]["significant"]
    assert a["at_worst"]["diff"] == pytest.approx(0.55 - 0.2)
    assert a["mean_rotated"]["diff"] == pytest.approx((0.55 + 0.58 + 0.56 - 0.95) / 3)


def test_rotation_facts_need_the_predictions():
    from reportgen.predictions import PredictionsError

    r = rot_result()
    del r["arrays"]["pred/resnet/42/val"]
    with pytest.raises(PredictionsError, match="run `reportgen rotation` again"):
        get_study("rotation").facts(r)


def shuffle_result(mlp_shuffled_right, cnn_shuffled_right=np.arange(500)):
    def run(model, shuffled):
        return {"model": model, "title": model.upper(), "shuffled": shuffled, "seeds": [42],
                "parameters": 1}

    correct = {"resnet": np.arange(800), "resnet-shuffled": cnn_shuffled_right,
               "mlp": np.arange(520), "mlp-shuffled": mlp_shuffled_right}
    arrays = {"labels/val": LABELS.astype(np.uint8), "labels/test": LABELS.astype(np.uint8)}
    for label, idx in correct.items():
        arrays[f"pred/{label}/42/val"] = arrays[f"pred/{label}/42/test"] = preds(idx)
    return {"epochs": 10, "mlp": {"optimizer": "adam", "activation": "tanh"}, "arrays": arrays,
            "data": {"val_images": N, "test_images": N},
            "runs": {"resnet": run("resnet", False), "resnet-shuffled": run("resnet", True),
                     "mlp": run("mlp", False), "mlp-shuffled": run("mlp", True)}}


def test_shuffle_facts():
    # The MLP on shuffled pixels: right on images 20..529, so 20 images lost and 10 gained.
    f = get_study("shuffle").facts(shuffle_result(np.arange(20, 530)))
    assert f["cnn"]["change"]["diff"] == pytest.approx(-0.3) and f["cnn"]["change"]["significant"]
    assert f["cnn"]["title"] == "RESNET" and f["cnn"]["original"]["mean"] == 0.8
    assert f["mlp"]["change"]["diff"] == pytest.approx(-0.01)
    assert f["mlp"]["change"]["discordant"] == [10, 20]  # shuffled right, original wrong: 10
    assert f["mlp"]["change"]["p"] == pytest.approx(analysis.mcnemar(10, 20))  # 0.099
    assert not f["mlp"]["change"]["significant"]
    d = f["difference_of_changes"]
    assert d["diff"] == pytest.approx(-0.3 + 0.01) and d["significant"]
    assert d["test"] == "paired t-test over images"  # four arms: not McNemar
    assert f["runs"]["mlp"]["test"]["mean"] == 0.52 and f["mlp_optimizer"] == "Adam"
    assert f["mlp_activation"] == "tanh"


@pytest.mark.parametrize("activation, words", [
    ("elu", "hidden layer of 16 units with ELU,"), ("relu", "hidden layer of 16 units with ReLU,"),
    ("gelu", "hidden layer of 16 units with GELU,"), ("tanh", "hidden layer of 16 units with tanh,")])
def test_the_mlps_activation_is_named_as_papers_write_it(tmp_path, activation, words):
    # `upper` printed "TANH" and would have printed "RELU".
    results = shuffle_result(np.arange(20, 530))
    for name in get_study("shuffle").figures:  # the section embeds them
        (tmp_path / f"{name}.png").write_bytes(tiny_png())
    text = _render("shuffle", {**results, "mlp": {**_MLP, "activation": activation},
                               "positions": 1024, "perm_seed": 42}, tmp_path, "results")
    assert words in text


def test_words_flip_when_the_difference_becomes_significant(tmp_path):
    """Same template, two crafted results: a 1-point change on 1,000 images is noise, an
    8-point one is a gain, and the discussion says so."""
    small = get_study("shuffle").facts(shuffle_result(np.arange(525)))["mlp"]["change"]
    large = get_study("shuffle").facts(shuffle_result(np.arange(600)))["mlp"]["change"]
    assert change(small).startswith("makes no measurable difference (+0.5 points [")
    assert change(large).startswith("gains 8.0 points (95% CI ")
    assert "McNemar's exact test, p < 0.001" in change(large)
    text = {k: _discussion(shuffle_result(np.arange(k)), tmp_path) for k in (525, 600)}
    assert "its accuracy shows no measurable change" in text[525]
    assert "shuffling makes no measurable difference" in text[525]
    assert "shuffling gains 8.0 points" in text[600]
    assert "no measurable change" not in text[600]
    # A measurable change of the MLP, which the permutation cannot cause, is not left as a
    # finding: one seed's test covers the images, not the training randomness.
    assert "most likely training randomness" in text[600] and "one seed does not cover" in text[600]
    assert "training randomness" not in text[525]


def test_inductive_bias_is_named_only_where_the_cnn_is_ahead_with_fewer_parameters(tmp_path):
    """"The CNN's strength on images is its inductive bias, not its capacity" needs the CNN
    measurably ahead on original pixels, with fewer parameters than the MLP: before, losing
    more under shuffling was enough."""
    def text(cnn_original_right, cnn_params):
        r = shuffle_result(np.arange(520), cnn_shuffled_right=np.arange(200))
        r["arrays"]["pred/resnet/42/test"] = preds(np.arange(cnn_original_right))
        for label in ("resnet", "resnet-shuffled"):
            r["runs"][label]["parameters"] = cnn_params
        for label in ("mlp", "mlp-shuffled"):
            r["runs"][label]["parameters"] = 394_634
        return _discussion(r, tmp_path)

    ahead = text(800, 83_946)
    r = shuffle_result(np.arange(520), cnn_shuffled_right=np.arange(200))
    assert "consistent with CNNs doing well on images because of what they assume about them" \
        in _discussion(r, tmp_path, "conclusion")
    r["arrays"]["pred/resnet/42/test"] = preds(np.arange(520))  # level with the MLP
    level = _discussion(r, tmp_path, "conclusion")
    assert "more than an MLP does (" in level and "well on images" not in level
    assert "strength on images (CNN minus MLP on original pixels +28.0 points [" in ahead
    assert "therefore points to its inductive bias rather than its capacity: it has fewer " \
           "parameters, 83,946 against the MLP's 394,634." in ahead
    for words in (text(520, 83_946), text(800, 1_000_000)):  # level with the MLP; larger
        assert "The CNN loses more than the MLP" in words and "inductive bias" not in words


def test_words_follow_a_difference_of_changes_in_either_direction(tmp_path):
    """Shuffling costs the MLP 22 points and the CNN 1: the difference of the changes is
    significant the other way round, and no part of the report calls it indistinguishable
    or says the CNN loses more."""
    results = shuffle_result(np.arange(300), cnn_shuffled_right=np.arange(790))
    f = get_study("shuffle").facts(results)
    assert f["difference_of_changes"]["diff"] == pytest.approx(0.21)
    assert f["difference_of_changes"]["significant"]
    text = {part: _discussion(results, tmp_path, part)
            for part in ("abstract", "discussion", "conclusion")}
    assert "did the CNN less harm than the MLP, the reverse of what" in text["discussion"]
    assert "the reverse of what the CNN's reliance on neighbouring pixels predicts" \
        in text["abstract"]
    assert "did it less harm than it did an MLP (+21.0 points [" in text["conclusion"]
    for words in text.values():
        assert "not distinguishable" not in words and "not settled" not in words
        assert "loses more than the MLP" not in words and "more than an MLP does (" not in words
    # And the expected direction: the CNN loses 30 points, the MLP 1.
    expected = _discussion(shuffle_result(np.arange(20, 530)), tmp_path)
    assert "The CNN loses more than the MLP (difference of the two changes −29.0 points" in expected


_MLP = {"optimizer": "adam", "hidden": [16], "activation": "elu", "lr": 1e-3}


def _discussion(results, figures_dir, part="discussion") -> str:
    """The shuffle study's discussion paragraph rendered from crafted results."""
    r = {**results, "mlp": _MLP, "positions": 1024, "perm_seed": 42}
    return _render("shuffle", r, figures_dir, part)


def _render(study, r, figures_dir, part="discussion") -> str:
    """One part of a study's report section rendered from crafted results, spaces squeezed."""
    import re

    from reportgen.report import Numbering, environment

    st = get_study(study)
    module = environment().get_template(st.partial).make_module(
        {"st": st, "r": r, "f": st.facts(r), "numbering": Numbering(figures_dir), "page_limit": 0})
    return re.sub(r"\s+", " ", str(getattr(module, part)()))


def _sweep(models, angles, confidence=None):
    """Rotation results: models maps a label to (role, images right at each angle)."""
    def entry(role, ks):
        acc = [k / N for k in ks]
        return {"aug_degrees": 180.0 if role == "augmented" else 0.0, "role": role,
                "title": role.capitalize(), "seeds": [42],
                "per_seed": [{"seed": 42, "run_dir": "x"}],
                "val": {"accuracy": acc, "confidence": confidence or [0.5] * len(ks),
                        "per_class": [[a] * 10 for a in acc]}}

    arrays = {"labels/val": LABELS.astype(np.uint8)}
    for label, (_, ks) in models.items():
        arrays[f"pred/{label}/42/val"] = np.stack([first(k) for k in ks])
    return {"angles": angles, "splits": ["val"], "classes": CLASSES, "arrays": arrays,
            "models": {label: entry(role, ks) for label, (role, ks) in models.items()},
            "fill": "mean", "interpolation": "bilinear",
            "config": {"train": {"augment": {"flip": True, "rotate_degrees": 0.0}}}}


EIGHT = [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0]
PLAIN = [800, 300, 200, 300, 500, 300, 250, 300]


@pytest.mark.parametrize("at_45, words", [
    (698, "its lowest accuracy, 69.8% [66.9, 72.6] at 45°, is not measurably below its accuracy "
          "at 0° (−0.2 points ["),
    (600, "its accuracy dips to 60.0% [56.9, 63.0] at 45° (−10.0 points [")])
def test_the_equivariant_networks_dip_is_called_one_only_when_it_is_measurable(
        tmp_path, at_45, words):
    eq = [700, at_45, 700, 700, 700, 700, 700, 700]
    text = _render("rotation", _sweep({"resnet": ("plain", PLAIN), "p4": ("equivariant", eq)},
                                      EIGHT), tmp_path)
    assert words in text
    assert ("dips" in text) == (at_45 == 600)


def test_the_abstract_says_rotation_lowers_accuracy_only_when_it_measurably_does(tmp_path):
    """A worst angle level with 0° read "changes the accuracy of the ResNet from 70.0% at 0°
    to 70.0% at 45°"; a change is claimed only where the test finds one."""
    flat = _render("rotation", _sweep({"resnet": ("plain", [700] * 8)}, EIGHT), tmp_path,
                   "abstract")
    assert "is not measurably below its accuracy at 0° (70.0% [" in flat
    assert "changes" not in flat and "lowers" not in flat and "not rotation invariant" not in flat
    drop = _render("rotation", _sweep({"resnet": ("plain", PLAIN)}, EIGHT), tmp_path, "abstract")
    assert "images lowers the accuracy of the Plain from 80.0% [" in drop
    assert "so the network is not rotation invariant" in drop


def test_augmentation_is_said_to_teach_invariance_only_when_it_measurably_does(tmp_path):
    helps = _render("rotation", _sweep({"resnet": ("plain", PLAIN), "aug": (
        "augmented", [600, 550, 560, 550, 580, 550, 560, 550])}, EIGHT), tmp_path)
    assert "Training with random rotations teaches the invariance" in helps
    assert "the same network has to cover every orientation." in helps
    narrow = _sweep({"resnet": ("plain", PLAIN), "aug": (
        "augmented", [600, 550, 560, 550, 580, 550, 560, 550])}, EIGHT)
    narrow["models"]["aug"]["aug_degrees"] = 30.0  # trained with rotations in ±30° only
    assert "has to cover every orientation within ±30°." in _render("rotation", narrow, tmp_path)
    same = _render("rotation", _sweep({"resnet": ("plain", PLAIN), "aug": (
        "augmented", [800, 301, 200, 300, 500, 300, 250, 300])}, EIGHT), tmp_path)
    assert "Training with random rotations is meant to teach the invariance" in same
    assert "which makes no measurable difference" in same


def test_classes_are_ranked_only_where_their_accuracies_differ(tmp_path):
    # Crafted predictions are right on the first k images, so every class scores the same.
    text = _render("rotation", _sweep({"resnet": ("plain", PLAIN)}, EIGHT), tmp_path)
    assert "survive rotation best" not in text and "Per-class accuracies are in" in text
    # Right only on airplanes and automobiles once rotated: now the ranking names them.
    r = _sweep({"resnet": ("plain", PLAIN)}, EIGHT)
    r["arrays"]["pred/resnet/42/val"][1:] = preds(np.flatnonzero(LABELS < 2))
    text = _render("rotation", r, tmp_path)
    assert "the classes that survive rotation best are airplane and automobile (100.0% [" in text


def test_only_a_measurable_rise_counts_as_accuracy_coming_back_up(tmp_path):
    # 180° rises 20 points above both of its neighbouring troughs; 270° is a 0.5-point wiggle.
    wiggle = [800, 300, 200, 300, 500, 300, 305, 300]
    assert [a for a, _ in circular_peaks(EIGHT, [k / N for k in wiggle])] == [180.0, 270.0]
    r = _sweep({"resnet": ("plain", wiggle)}, EIGHT)
    f = get_study("rotation").facts(r)
    assert [a for a, _ in f["models"]["resnet"]["val"]["peaks"]] == [180.0]
    text = _render("rotation", r, tmp_path)
    assert ("Accuracy comes back up, to a local maximum above chance and measurably above the "
            "lowest angle on each side, at 180° (50.0% [") in text
    # Why it comes back is a guess the sweep does not test, and the report says so.
    assert "at 180° the image is upside down and mirrored" in text
    assert "which may be why some accuracy returns there (this sweep does not test that)" in text


def test_several_peaks_are_listed_by_angle(tmp_path):
    """They were listed as circular_peaks found them, without an "and": "at 180° (...),
    270° (...), 90° (...)"."""
    text = _render("rotation", _sweep({"resnet": ("plain", [800, 300, 600, 300, 500, 300, 700,
                                                              300])}, EIGHT), tmp_path)
    assert re.search(r"at 90° \(60\.0% \[[^]]*\]\), 180° \(50\.0% \[[^]]*\]\) and 270° "
                     r"\(70\.0% \[", text), text


def test_figures_draw_intervals_an_accuracy_can_have():
    # Two seeds at 10% and 60%: their t-interval (t = 12.7) runs from -283 to +353 points.
    two = analysis.accuracy([0.1, 0.6], 1000)
    assert two["seed_ci"][0] < 0 and two["seed_ci"][1] > 1
    assert analysis.shown_interval(two) == [0.0, 1.0]
    one = analysis.accuracy([0.7], 100)
    assert analysis.shown_interval(one) == pytest.approx(list(analysis.wilson(70, 100)))


@pytest.mark.parametrize("angles, named", [
    ([0.0, 10.0, 20.0, 90.0, 180.0, 270.0], "Rotating by 10°–20° already lowers accuracy by"),
    ([0.0, 15.0, 90.0, 180.0, 270.0], "Rotating by 15° already lowers accuracy by"),
    ([0.0, 90.0, 180.0, 270.0], None),
])
def test_the_discussion_names_the_small_angles_it_measured(tmp_path, angles, named):
    """Before, a sweep with 15° as its only small angle read "Rotating by 10°–20°"."""
    ks = [800] + [600 if 0 < a < 30 else 300 for a in angles[1:]]
    text = _render("rotation", _sweep({"resnet": ("plain", ks)}, angles), tmp_path)
    if named:
        assert named in text
    else:
        assert "Rotating by" not in text


@pytest.mark.parametrize("model, says, never", [
    ("preact_resnet", "nothing ties a filter to its rotated copies", "by construction"),
    ("p4_preact_resnet", "This network's group convolutions",
     "nothing ties a filter to its rotated copies"),
])
def test_the_discussion_knows_when_the_network_itself_is_p4_equivariant(tmp_path, model, says,
                                                                       never):
    """With model.name = "p4_preact_resnet" the discussion said convolutions leave rotations out
    and that invariance "has to be ... built into the architecture": it was."""
    r = _sweep({"resnet": ("plain", PLAIN)}, EIGHT)
    r["models"]["resnet"]["model"] = model
    text = _render("rotation", r, tmp_path)
    assert says in text and never not in text
    intro = _render("rotation", r, tmp_path, part="introduction")
    assert ("builds in for multiples of 90° only" in intro) == (model == "p4_preact_resnet")


@pytest.mark.parametrize("worst", [105, 130, 300])
def test_a_worst_angle_near_chance_is_not_called_no_better_than_chance(tmp_path, worst):
    """An accuracy whose interval holds chance is not shown to be above it, which is not the
    same as "no better than chance", as the words said: 10.5% of 1,000 images is named not
    measurably above chance (10%); 13% and 30% lie above it."""
    ks = [800, worst, 400, worst + 50]
    above = analysis.above_chance(worst / N, N, 0.1)
    assert above == (worst > 105)
    text = _render("rotation", _sweep({"resnet": ("plain", ks)}, [0.0, 90.0, 180.0, 270.0]),
                   tmp_path)
    assert "no better than chance" not in text
    assert ("not measurably above chance (10%)" in text) == (not above), text
