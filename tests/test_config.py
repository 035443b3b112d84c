"""Config schema: YAML 1.1 switch words for string keys, closed value sets, float strings."""

import pytest

from eclipse_seg.config import load_config
from eclipse_seg.errors import ConfigError

BASE = "synthetic/base"


@pytest.mark.parametrize(
    "text, expected",
    [("off", "off"), ("no", "off"), ("bf16", "bf16"), ("fp16", "fp16"), ("auto", "auto")],
)
def test_amp_values_from_the_command_line(text, expected):
    # YAML reads `off` as False: a string key must still get the word the user wrote
    assert load_config(BASE, [f"solver.amp={text}"]).solver.amp == expected


@pytest.mark.parametrize(
    "override, key",
    [
        ("solver.amp=bf61", "solver.amp"),
        ("solver.amp=on", "solver.amp"),
        ("continual.method=replay", "continual.method"),
        ("loss.class_loss=softmax", "loss.class_loss"),
        ("model.backbone_type=vit", "model.backbone_type"),
        ("data.dataset=ade", "data.dataset"),
    ],
)
def test_closed_value_sets_name_the_key_and_the_choices(override, key):
    with pytest.raises(ConfigError, match=rf"'{key}': expected one of .*got"):
        load_config(BASE, [override])


def test_float_written_without_a_dot():
    assert load_config(BASE, ["continual.lr=3e-3"]).continual.lr == pytest.approx(3e-3)
