"""Reading the official ECLIPSE / Mask2Former (detectron2-style) configs without detectron2.

* :func:`load_official_config` reads a YAML file with ``_BASE_`` inheritance (paths relative to the
  including file), the ``!!python/object/apply:eval ["<expr>"]`` tag the official configs use for
  ``CONT.ORDER`` and ``INPUT.MIN_SIZE_TRAIN`` and the official ``KEY VALUE`` override list. The tag's
  expression is never handed to ``eval``: it is parsed with :mod:`ast` and interpreted over a small
  allow-list (list/tuple literals, numbers, list comprehensions, ``range``/``int``/``float``/``list``,
  ``+ - * / // %``); anything else is a :class:`~eclipse_seg.errors.ConfigError` naming the key.
  String values are decoded like detectron2 (a Python literal when they parse as one, otherwise the
  string), with :func:`ast.literal_eval`, which evaluates nothing.
* :func:`to_eclipse_config` maps the settings our model implements to a :class:`~eclipse_seg.config.Config`
  and rejects every setting that would change the official model's outputs in a way we do not
  reproduce (with the key in the message).
"""

from __future__ import annotations

import ast
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eclipse_seg.errors import ConfigError

__all__ = [
    "OFFICIAL_DEFAULTS",
    "OfficialConfig",
    "load_official_config",
    "parse_official_opts",
    "safe_eval_expression",
    "to_eclipse_config",
]

# --------------------------------------------------------------------------------------------------
# defaults: detectron2's, then Mask2Former's (mask2former/config.py), then ECLIPSE's
# (continual/config.py), for the keys that matter to the model or to the mapping.
# --------------------------------------------------------------------------------------------------
OFFICIAL_DEFAULTS: dict = {
    "MODEL": {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "WEIGHTS": "",
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 2},
        "RESNETS": {
            "DEPTH": 50,
            "OUT_FEATURES": ["res4"],
            "NUM_GROUPS": 1,
            "NORM": "FrozenBN",
            "WIDTH_PER_GROUP": 64,
            "STRIDE_IN_1X1": True,
            "RES5_DILATION": 1,
            "RES2_OUT_CHANNELS": 256,
            "STEM_OUT_CHANNELS": 64,
            "DEFORM_ON_PER_STAGE": [False, False, False, False],
            "DEFORM_MODULATED": False,
            "DEFORM_NUM_GROUPS": 1,
        },
        "SWIN": {
            "PRETRAIN_IMG_SIZE": 224,
            "PATCH_SIZE": 4,
            "EMBED_DIM": 96,
            "DEPTHS": [2, 2, 6, 2],
            "NUM_HEADS": [3, 6, 12, 24],
            "WINDOW_SIZE": 7,
            "MLP_RATIO": 4.0,
            "QKV_BIAS": True,
            "QK_SCALE": None,
            "DROP_RATE": 0.0,
            "ATTN_DROP_RATE": 0.0,
            "DROP_PATH_RATE": 0.3,
            "APE": False,
            "PATCH_NORM": True,
            "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
            "USE_CHECKPOINT": False,
        },
        "SEM_SEG_HEAD": {
            "NAME": "SemSegFPNHead",
            "IN_FEATURES": ["p2", "p3", "p4", "p5"],
            "IGNORE_VALUE": 255,
            "NUM_CLASSES": 54,
            "CONVS_DIM": 128,
            "COMMON_STRIDE": 4,
            "NORM": "GN",
            "LOSS_WEIGHT": 1.0,
            "MASK_DIM": 256,
            "TRANSFORMER_ENC_LAYERS": 0,
            "PIXEL_DECODER_NAME": "BasePixelDecoder",
            "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
            "DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
            "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
        },
        "MASK_FORMER": {
            "SOFTMASK": False,
            "PER_PIXEL": False,
            "DEEP_SUPERVISION": True,
            "FOCAL": False,
            "FOCAL_ALPHA": 5.0,
            "FOCAL_GAMMA": 1.0,
            "NO_OBJECT_WEIGHT": 0.1,
            "CLASS_WEIGHT": 1.0,
            "DICE_WEIGHT": 1.0,
            "MASK_WEIGHT": 20.0,
            "NHEADS": 8,
            "DROPOUT": 0.1,
            "DIM_FEEDFORWARD": 2048,
            "ENC_LAYERS": 0,
            "DEC_LAYERS": 6,
            "PRE_NORM": False,
            "HIDDEN_DIM": 256,
            "NUM_OBJECT_QUERIES": 100,
            "TRANSFORMER_IN_FEATURE": "res5",
            "ENFORCE_INPUT_PROJ": False,
            "SIZE_DIVISIBILITY": 32,
            "TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
            "TRAIN_NUM_POINTS": 112 * 112,
            "OVERSAMPLE_RATIO": 3.0,
            "IMPORTANCE_SAMPLE_RATIO": 0.75,
            "TEST": {
                "SEMANTIC_ON": True,
                "MASK_BG": True,
                "INSTANCE_ON": False,
                "PANOPTIC_ON": False,
                "OBJECT_MASK_THRESHOLD": 0.0,
                "OVERLAP_THRESHOLD": 0.0,
                "SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False,
            },
        },
    },
    "INPUT": {"FORMAT": "BGR", "MIN_SIZE_TRAIN": (800,), "MIN_SIZE_TEST": 800},
    "DATASETS": {"TRAIN": (), "TEST": ()},
    "SOLVER": {
        "IMS_PER_BATCH": 16,
        "BASE_LR": 0.001,
        "MAX_ITER": 40000,
        "WEIGHT_DECAY": 0.0001,
        "BACKBONE_MULTIPLIER": 0.1,
    },
    "CONT": {
        "BASE_CLS": 15,
        "INC_CLS": 5,
        "ORDER": list(range(1, 21)),
        "ORDER_NAME": None,
        "TASK": 0,
        "WEIGHTS": None,
        "MODE": "overlap",
        "INC_QUERY": False,
        "COSINE": False,
        "USE_BIAS": True,
        "WA_STEP": 0,
        "NUM_PROMPTS": 10,
        "SOFTCLS": True,
        "BACKBONE_FREEZE": False,
        "CLS_HEAD_FREEZE": False,
        "MASK_HEAD_FREEZE": False,
        "PIXEL_DECODER_FREEZE": False,
        "QUERY_EMBED_FREEZE": False,
        "TRANS_DECODER_FREEZE": False,
        "PROMPT_DEEP": False,
        "PROMPT_MASK_MLP": False,
        "PROMPT_NO_OBJ_MLP": False,
        "DEEP_CLS": False,
        "LOGIT_MANI_DELTAS": None,
    },
}

# --------------------------------------------------------------------------------------------------
# safe evaluation of the `!!python/object/apply:eval` expressions
# --------------------------------------------------------------------------------------------------
_MAX_ITEMS = 1_000_000
_ALLOWED_CALLS = {"range", "int", "float", "list"}
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


class _Reject(Exception):
    pass


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_size(v):
    if isinstance(v, (list, tuple, range)) and len(v) > _MAX_ITEMS:
        raise _Reject(f"a sequence of more than {_MAX_ITEMS} items")
    return v


def _interpret(node: ast.AST, env: dict[str, Any]):
    if isinstance(node, ast.Expression):
        return _interpret(node.body, env)
    if isinstance(node, ast.Constant):
        if _is_number(node.value):
            return node.value
        raise _Reject(f"constant {node.value!r} (only numbers are allowed)")
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_interpret(e, env) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise _Reject(f"name {node.id!r} (only names bound by a comprehension)")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _interpret(node.operand, env)
        if not _is_number(v):
            raise _Reject("unary sign on a non-number")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _interpret(node.left, env), _interpret(node.right, env)
        if not (_is_number(a) and _is_number(b)):
            raise _Reject("arithmetic on non-numbers")
        try:
            r = _BINOPS[type(node.op)](a, b)
        except ZeroDivisionError:
            raise _Reject("division by zero") from None
        if isinstance(r, float) and not math.isfinite(r):
            raise _Reject("a non-finite result")
        return r
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _ALLOWED_CALLS:
            what = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
            raise _Reject(f"call of {what!r} (only {sorted(_ALLOWED_CALLS)})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _Reject("keyword or starred arguments")
        args = [_interpret(a, env) for a in node.args]
        name = node.func.id
        if name == "range":
            if not 1 <= len(args) <= 3 or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in args
            ):
                raise _Reject("range() takes 1 to 3 integers")
            return _check_size(range(*args))
        if len(args) != 1:
            raise _Reject(f"{name}() takes exactly one argument here")
        (a,) = args
        if name in ("int", "float"):
            if not _is_number(a):
                raise _Reject(f"{name}() of a non-number")
            return int(a) if name == "int" else float(a)
        if not isinstance(a, (list, tuple, range)):
            raise _Reject("list() of a non-sequence")
        return _check_size(list(a))
    if isinstance(node, ast.ListComp):
        return _comprehension(node, env)
    raise _Reject(f"{type(node).__name__} expressions")


def _bind(target: ast.AST, value, env: dict) -> None:
    if isinstance(target, ast.Name):
        env[target.id] = value
        return
    if isinstance(target, (ast.Tuple, ast.List)) and all(
        isinstance(t, ast.Name) for t in target.elts
    ):
        if not isinstance(value, (list, tuple)) or len(value) != len(target.elts):
            raise _Reject("cannot unpack a comprehension item")
        for t, v in zip(target.elts, value):
            env[t.id] = v
        return
    raise _Reject("comprehension targets other than names")


def _comprehension(node: ast.ListComp, env: dict) -> list:
    out: list = []

    def loop(i: int, scope: dict) -> None:
        if i == len(node.generators):
            out.append(_interpret(node.elt, scope))
            if len(out) > _MAX_ITEMS:
                raise _Reject(f"more than {_MAX_ITEMS} items")
            return
        gen = node.generators[i]
        if gen.ifs or gen.is_async:
            raise _Reject("comprehension conditions")
        seq = _interpret(gen.iter, scope)
        if not isinstance(seq, (list, tuple, range)):
            raise _Reject("iteration over a non-sequence")
        for item in seq:
            inner = dict(scope)
            _bind(gen.target, item, inner)
            loop(i + 1, inner)

    loop(0, dict(env))
    return out


def safe_eval_expression(expr: str, key: str = "<expr>"):
    """Value of one official config expression (e.g. ``[int(x * 0.1 * 640) for x in range(5, 21)]``);
    ConfigError naming `key` and the expression for anything outside the allow-list."""
    if not isinstance(expr, str):
        raise ConfigError(
            f"config key '{key}': the eval tag needs one string expression, got {expr!r}"
        )
    if len(expr) > 10_000:
        raise ConfigError(f"config key '{key}': expression too long ({len(expr)} characters)")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ConfigError(
            f"config key '{key}': expression {expr!r} is not valid Python ({e.msg})"
        ) from None
    try:
        value = _interpret(tree, {})
    except _Reject as e:
        raise ConfigError(
            f"config key '{key}': expression {expr!r} is not allowed: it uses {e}; only "
            f"list/tuple literals, numbers, list comprehensions, range/int/float/list and "
            f"+ - * / // % are evaluated"
        ) from None
    except RecursionError:
        raise ConfigError(f"config key '{key}': expression {expr!r} is nested too deeply") from None
    return list(value) if isinstance(value, range) else value


# --------------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _EvalTag:
    args: Any


class _OfficialLoader(yaml.SafeLoader):
    """SafeLoader that turns the eval tag into a marker; nothing is evaluated while parsing."""


def _construct_eval(loader: yaml.SafeLoader, node: yaml.Node) -> _EvalTag:
    if isinstance(node, yaml.SequenceNode):
        return _EvalTag(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.ScalarNode):
        return _EvalTag([loader.construct_scalar(node)])
    return _EvalTag(None)


_OfficialLoader.add_constructor("tag:yaml.org,2002:python/object/apply:eval", _construct_eval)


def _decode_value(value: Any, key: str) -> Any:
    """detectron2/yacs decoding: eval tags through the safe interpreter, strings that are Python
    literals (e.g. ``(640, 640)``, ``("ade20k_panoptic_train",)``) to the literal."""
    if isinstance(value, _EvalTag):
        args = value.args
        if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], str):
            raise ConfigError(
                f"config key '{key}': the eval tag needs exactly one string argument, got {args!r}"
            )
        return safe_eval_expression(args[0], key)
    if isinstance(value, dict):
        return {k: _decode_value(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_value(v, key) for v in value]
    if isinstance(value, str):
        return _literal(value)
    return value


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_yaml(path: Path, seen: tuple = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"official config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"official config {path} includes itself through _BASE_")
    try:
        data = yaml.load(path.read_text(), Loader=_OfficialLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(
            f"official config {path} is not valid YAML (or uses a tag other than "
            f"!!python/object/apply:eval): {e}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"official config {path}: expected a mapping at the top level")
    data = _decode_value(data, "")
    base = data.pop("_BASE_", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"official config {path}: _BASE_ must be a path, got {base!r}")
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        data = _merge(_load_yaml(base_path, seen + (path.resolve(),)), data)
    return data


# --------------------------------------------------------------------------------------------------
# the config object and KEY VALUE overrides
# --------------------------------------------------------------------------------------------------
_MISSING = object()
_ABSENT = object()


@dataclass
class OfficialConfig:
    """The merged official config tree (upper-case detectron2 keys) over the official defaults."""

    tree: dict
    path: Path | None = None
    opts: list = field(default_factory=list)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        node: Any = self.tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is _MISSING:
                    raise ConfigError(f"official config: key '{key}' is not set and has no default")
                return default
            node = node[part]
        return node

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def set(self, key: str, value: Any) -> None:
        node = self.tree
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"official override '{key}': '{p}' is a value, not a section")
            node = nxt
        node[parts[-1]] = value


def _coerce(key: str, value: Any, old: Any) -> Any:
    """detectron2-like type check of an override against the current value."""
    if old is _ABSENT or old is None or value is None:
        return value
    if isinstance(old, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"official override '{key}': expected True/False, got {value!r}")
    if isinstance(old, float) and _is_number(value):
        return float(value)
    if isinstance(old, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(old, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(old)(value)
    if isinstance(old, str) and isinstance(value, str):
        return value
    if isinstance(old, dict):
        raise ConfigError(f"official override '{key}': is a section, not a value")
    if type(old) is not type(value):
        raise ConfigError(
            f"official override '{key}': type {type(value).__name__} ({value!r}) does "
            f"not match the config's {type(old).__name__} ({old!r})"
        )
    return value


def parse_official_opts(opts: list[str] | None) -> list[tuple[str, Any]]:
    """["CONT.TASK", "10", "CONT.LOGIT_MANI_DELTAS", "[0.4,0.6]"] -> [(key, decoded value), ...]."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(
            f"official overrides must be KEY VALUE pairs; got an odd number "
            f"({len(opts)}), the last is {opts[-1]!r}"
        )
    pairs = []
    for key, raw in zip(opts[::2], opts[1::2]):
        if not isinstance(key, str) or not key or not all(p for p in key.split(".")):
            raise ConfigError(f"official override key {key!r} is not a dotted KEY")
        pairs.append((key, _literal(raw) if isinstance(raw, str) else raw))
    return pairs


def load_official_config(path: str | Path, opts: list[str] | None = None) -> OfficialConfig:
    """Official YAML (+ `_BASE_` chain) over the official defaults, then the KEY VALUE overrides."""
    tree = _merge(copy.deepcopy(OFFICIAL_DEFAULTS), _load_yaml(Path(path)))
    cfg = OfficialConfig(tree=tree, path=Path(path), opts=list(opts or []))
    for key, value in parse_official_opts(opts):
        cfg.set(key, _coerce(key, value, cfg.get(key, _ABSENT)))
    return cfg


# --------------------------------------------------------------------------------------------------
# mapping to our Config
# --------------------------------------------------------------------------------------------------
_BN_NORMS = {"FrozenBN", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN"}


def _require(cond: bool, key: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"official config key '{key}' = {value!r} is not supported: {why}")


def _as_bool(cfg: OfficialConfig, key: str) -> bool:
    v = cfg.get(key)
    if not isinstance(v, bool):
        raise ConfigError(f"official config key '{key}': expected True/False, got {v!r}")
    return v


def _as_int(cfg: OfficialConfig, key: str) -> int:
    v = cfg.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(f"official config key '{key}': expected an integer, got {v!r}")
    return v


def _as_float(cfg: OfficialConfig, key: str) -> float:
    v = cfg.get(key)
    if not _is_number(v):
        raise ConfigError(f"official config key '{key}': expected a number, got {v!r}")
    return float(v)


def _catalog_of(cfg: OfficialConfig) -> str:
    train = cfg.get("DATASETS.TRAIN")
    names = [train] if isinstance(train, str) else list(train or [])
    text = " ".join(str(n).lower() for n in names)
    if "ade20k" in text or "ade" in text.split("_"):
        return "ade20k"
    if "coco" in text:
        return "coco"
    raise ConfigError(
        f"official config key 'DATASETS.TRAIN' = {train!r}: not ADE20K or COCO (names "
        f"containing 'ade20k' or 'coco'), whose classes we know; for any other dataset "
        f"pass a categories file listing its classes (--categories FILE, or "
        f"categories=...: a JSON list of {{id, name, isthing}} or a COCO panoptic JSON)"
    )


def _check_custom_classes(
    c: OfficialConfig, order: list[int], categories: list[dict], kind: str
) -> None:
    """A categories file describes the model's classes: as many as CONT.ORDER and
    MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1 (the official code's class count; the one more is its
    background) hold. CONT.ORDER numbers classes 1..n by position in the file (contiguous ids),
    except on semantic data, where the official code reads them as label-PNG values: there the
    file's ids must be 1..n in order, so that both readings agree."""
    n = len(categories)
    num_classes = _as_int(c, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    if num_classes - 1 != n:
        raise ConfigError(
            f"the categories file lists {n} classes but the checkpoint's model has "
            f"{num_classes - 1} (official config key 'MODEL.SEM_SEG_HEAD.NUM_CLASSES' "
            f"= {num_classes}, one more than the classes); the file must list every "
            f"class of the training set"
        )
    if len(order) != n:
        raise ConfigError(
            f"official config key 'CONT.ORDER' has {len(order)} classes but the "
            f"categories file lists {n}; CONT.ORDER's values are the positions "
            f"1..{n} of the classes in the file"
        )
    ids = [ct["id"] for ct in categories]
    if kind == "semantic" and ids != list(range(1, n + 1)):
        raise ConfigError(
            f"a semantic training set (official config key 'DATASETS.TRAIN' = "
            f"{c.get('DATASETS.TRAIN')!r}) numbers classes by label-PNG value: the "
            f"categories file's ids must be 1..{n} in order, got {ids[:10]}"
        )


def _dataset_kind(cfg: OfficialConfig) -> str:
    """Our `data.dataset` for the official training set: "semantic" for `*_sem_seg_*` sets
    (ADE20K semantic), else "coco_panoptic" (the panoptic JSON + PNG layout)."""
    train = cfg.get("DATASETS.TRAIN")
    names = [train] if isinstance(train, str) else list(train or [])
    return "semantic" if any("sem_seg" in str(n).lower() for n in names) else "coco_panoptic"


def _deltas(cfg: OfficialConfig) -> list[float]:
    d = cfg.get("CONT.LOGIT_MANI_DELTAS")
    if d is None:
        return [0.0]
    if _is_number(d):
        return [float(d)]
    if isinstance(d, (list, tuple)) and d and all(_is_number(x) for x in d):
        return [float(x) for x in d]
    raise ConfigError(
        f"official config key 'CONT.LOGIT_MANI_DELTAS': expected a number or a list of "
        f"numbers, got {d!r}"
    )


def _resnet(c: OfficialConfig, notes: list[str]) -> dict:
    """`MODEL.RESNETS.*` -> our `model.backbone` section (detectron2's ResNet)."""
    depth = _as_int(c, "MODEL.RESNETS.DEPTH")
    _require(
        depth in (50, 101, 152), "MODEL.RESNETS.DEPTH", depth, "bottleneck ResNets 50/101/152 only"
    )
    _require(
        c.get("MODEL.RESNETS.STRIDE_IN_1X1") is False,
        "MODEL.RESNETS.STRIDE_IN_1X1",
        c.get("MODEL.RESNETS.STRIDE_IN_1X1"),
        "our ResNet puts the stride on the 3x3 conv (STRIDE_IN_1X1 False, as all official configs)",
    )
    norm = c.get("MODEL.RESNETS.NORM")
    _require(
        norm in _BN_NORMS,
        "MODEL.RESNETS.NORM",
        norm,
        f"one of {sorted(_BN_NORMS)} (batch norm in eval mode equals FrozenBN)",
    )
    if norm != "FrozenBN":
        notes.append(
            f"MODEL.RESNETS.NORM {norm}: loaded as FrozenBN (identical in inference; "
            f"num_batches_tracked is dropped)"
        )
    _require(
        c.get("MODEL.RESNETS.RES5_DILATION") == 1,
        "MODEL.RESNETS.RES5_DILATION",
        c.get("MODEL.RESNETS.RES5_DILATION"),
        "only 1",
    )
    deform = c.get("MODEL.RESNETS.DEFORM_ON_PER_STAGE")
    _require(
        not any(deform or []),
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
        deform,
        "deformable convolutions are not implemented",
    )
    return {
        "depth": depth,
        "stem_out_channels": _as_int(c, "MODEL.RESNETS.STEM_OUT_CHANNELS"),
        "res2_out_channels": _as_int(c, "MODEL.RESNETS.RES2_OUT_CHANNELS"),
        "num_groups": _as_int(c, "MODEL.RESNETS.NUM_GROUPS"),
        "width_per_group": _as_int(c, "MODEL.RESNETS.WIDTH_PER_GROUP"),
        "freeze_at": _as_int(c, "MODEL.BACKBONE.FREEZE_AT"),
    }


def _int_list(c: OfficialConfig, key: str, n: int) -> list[int]:
    v = c.get(key)
    ok = isinstance(v, (list, tuple)) and len(v) == n
    if not ok or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        raise ConfigError(f"official config key '{key}': expected {n} positive integers, got {v!r}")
    return list(v)


def _rate(c: OfficialConfig, key: str) -> float:
    v = _as_float(c, key)
    _require(0.0 <= v < 1.0, key, v, "a probability in [0, 1)")
    return v


def _swin(c: OfficialConfig) -> dict:
    """`MODEL.SWIN.*` (Mask2Former's D2SwinTransformer) -> our `model.swin` section."""
    k = "MODEL.SWIN."
    patch = _as_int(c, k + "PATCH_SIZE")
    _require(
        patch == 4,
        k + "PATCH_SIZE",
        patch,
        "the official backbone reports strides 4..32 whatever the patch size",
    )
    embed = _as_int(c, k + "EMBED_DIM")
    _require(embed > 0, k + "EMBED_DIM", embed, "must be positive")
    # four stages: the official backbone always names res2..res5
    depths, heads = _int_list(c, k + "DEPTHS", 4), _int_list(c, k + "NUM_HEADS", 4)
    dims = [embed * 2**i for i in range(4)]
    _require(
        all(d % h == 0 for d, h in zip(dims, heads)),
        k + "NUM_HEADS",
        heads,
        f"each stage's channels {dims} must divide by its head count",
    )
    window = _as_int(c, k + "WINDOW_SIZE")
    _require(window > 0, k + "WINDOW_SIZE", window, "must be positive")
    mlp_ratio = _as_float(c, k + "MLP_RATIO")
    _require(mlp_ratio > 0, k + "MLP_RATIO", mlp_ratio, "must be positive")
    qk_scale = c.get(k + "QK_SCALE")
    # officially `qk_scale or head_dim ** -0.5`: None and 0 give the default, the only scale we have
    default_scale = qk_scale is None or (
        _is_number(qk_scale)
        and (
            qk_scale == 0
            or all(math.isclose(qk_scale, (d // h) ** -0.5) for d, h in zip(dims, heads))
        )
    )
    _require(
        default_scale,
        k + "QK_SCALE",
        qk_scale,
        "our window attention scales by head_dim ** -0.5 (the default, None)",
    )
    pretrain = _as_int(c, k + "PRETRAIN_IMG_SIZE")  # sizes the absolute position embedding only
    _require(
        pretrain >= patch, k + "PRETRAIN_IMG_SIZE", pretrain, "must be at least the patch size"
    )
    out = c.get(k + "OUT_FEATURES")
    _require(
        isinstance(out, (list, tuple)) and sorted(out) == ["res2", "res3", "res4", "res5"],
        k + "OUT_FEATURES",
        out,
        "the pixel decoder needs all of res2..res5",
    )
    return {
        "embed_dim": embed,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": _as_bool(c, k + "QKV_BIAS"),
        "drop_rate": _rate(c, k + "DROP_RATE"),
        "attn_drop_rate": _rate(c, k + "ATTN_DROP_RATE"),
        "drop_path_rate": _rate(c, k + "DROP_PATH_RATE"),
        "patch_size": patch,
        "ape": _as_bool(c, k + "APE"),
        "patch_norm": _as_bool(c, k + "PATCH_NORM"),
        "pretrain_img_size": pretrain,
        "out_indices": [0, 1, 2, 3],
        # D2SwinTransformer never passes frozen_stages (MODEL.BACKBONE.FREEZE_AT is ResNet-only)
        "frozen_stages": -1,
        "use_checkpoint": _as_bool(c, k + "USE_CHECKPOINT"),
    }


def _backbone(c: OfficialConfig, notes: list[str]) -> dict:
    """Our `model` entries for `MODEL.BACKBONE.NAME`: ResNet or Swin; the other family's keys are
    ignored, as officially."""
    name = c.get("MODEL.BACKBONE.NAME")
    if name == "build_resnet_backbone":
        return {"backbone_type": "resnet", "backbone": _resnet(c, notes)}
    if name == "D2SwinTransformer":
        return {"backbone_type": "swin", "swin": _swin(c)}
    raise ConfigError(
        f"official config key 'MODEL.BACKBONE.NAME' = {name!r} is not supported: only "
        f"'build_resnet_backbone' (ResNet) and 'D2SwinTransformer' (Swin)"
    )


def to_eclipse_config(official: OfficialConfig, categories: list[dict] | None = None):
    """(Config, info) for the model an official config builds at its step `CONT.TASK`.

    `categories`: the classes of the training set (validated entries of a categories file, see
    `eclipse_seg.data.categories`), required unless `DATASETS.TRAIN` names ADE20K or COCO; class
    k of CONT.ORDER is then entry k (1-based) of the list. info: {"step", "classes_per_step",
    "scenario", "method", "num_prompts", "catalog" ("" with a categories list), "notes"}. Settings
    that would change the official model's outputs in a way we do not reproduce raise ConfigError
    naming the key."""
    from eclipse_seg.config import config_from_dict
    from eclipse_seg.data.catalogs import load_catalog

    c = official
    notes: list[str] = []
    # ---- architecture ---------------------------------------------------------------------------
    meta = c.get("MODEL.META_ARCHITECTURE")
    _require(
        meta == "MaskFormer", "MODEL.META_ARCHITECTURE", meta, "only 'MaskFormer' (Mask2Former)"
    )
    backbone = _backbone(c, notes)
    mean, std = c.get("MODEL.PIXEL_MEAN"), c.get("MODEL.PIXEL_STD")
    from eclipse_seg.model.mask2former import PIXEL_MEAN, PIXEL_STD

    _require(
        len(mean) == 3 and all(abs(a - b) < 1e-3 for a, b in zip(mean, PIXEL_MEAN)),
        "MODEL.PIXEL_MEAN",
        mean,
        f"our normalisation is fixed to {list(PIXEL_MEAN)} (RGB)",
    )
    _require(
        len(std) == 3 and all(abs(a - b) < 1e-3 for a, b in zip(std, PIXEL_STD)),
        "MODEL.PIXEL_STD",
        std,
        f"our normalisation is fixed to {list(PIXEL_STD)}",
    )
    fmt = c.get("INPUT.FORMAT")
    _require(fmt == "RGB", "INPUT.FORMAT", fmt, "our models take RGB input")

    pd = c.get("MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME")
    _require(
        pd == "MSDeformAttnPixelDecoder",
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME",
        pd,
        "only 'MSDeformAttnPixelDecoder'",
    )
    _require(
        c.get("MODEL.SEM_SEG_HEAD.NORM") == "GN",
        "MODEL.SEM_SEG_HEAD.NORM",
        c.get("MODEL.SEM_SEG_HEAD.NORM"),
        "only 'GN'",
    )
    _require(
        c.get("MODEL.SEM_SEG_HEAD.COMMON_STRIDE") == 4,
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE",
        c.get("MODEL.SEM_SEG_HEAD.COMMON_STRIDE"),
        "only 4",
    )
    enc_in = list(c.get("MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"))
    _require(
        enc_in == ["res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES",
        enc_in,
        "only ['res3', 'res4', 'res5']",
    )
    td = c.get("MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME")
    _require(
        td == "MultiScaleMaskedTransformerDecoder",
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
        td,
        "only 'MultiScaleMaskedTransformerDecoder'",
    )
    _require(
        c.get("MODEL.MASK_FORMER.SIZE_DIVISIBILITY") == 32,
        "MODEL.MASK_FORMER.SIZE_DIVISIBILITY",
        c.get("MODEL.MASK_FORMER.SIZE_DIVISIBILITY"),
        "our padding is to a multiple of 32",
    )
    dec_layers = _as_int(c, "MODEL.MASK_FORMER.DEC_LAYERS")
    _require(dec_layers >= 1, "MODEL.MASK_FORMER.DEC_LAYERS", dec_layers, "must be >= 1")
    conv_dim = _as_int(c, "MODEL.SEM_SEG_HEAD.CONVS_DIM")
    _require(
        conv_dim % 32 == 0,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM",
        conv_dim,
        "GroupNorm(32) needs a multiple of 32",
    )
    nheads = _as_int(c, "MODEL.MASK_FORMER.NHEADS")
    hidden = _as_int(c, "MODEL.MASK_FORMER.HIDDEN_DIM")
    _require(
        hidden % nheads == 0 and hidden % 2 == 0,
        "MODEL.MASK_FORMER.HIDDEN_DIM",
        hidden,
        "must be even and divisible by NHEADS",
    )
    _require(
        conv_dim % nheads == 0,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM",
        conv_dim,
        "must be divisible by MODEL.MASK_FORMER.NHEADS (the pixel decoder's head count)",
    )
    for key in (
        "MODEL.MASK_FORMER.SOFTMASK",
        "MODEL.MASK_FORMER.PER_PIXEL",
        "CONT.COSINE",
        "CONT.SOFTCLS",
    ):
        v = c.get(key)
        _require(
            v is False,
            key,
            v,
            {
                "MODEL.MASK_FORMER.SOFTMASK": "softmax masks are not implemented (sigmoid masks only)",
                "MODEL.MASK_FORMER.PER_PIXEL": "per-pixel classification is not implemented",
                "CONT.COSINE": "the cosine classifier is not implemented",
                "CONT.SOFTCLS": "softmax classification is not implemented (the official scripts pass "
                "CONT.SOFTCLS False; the code's default is True)",
            }[key],
        )
    semantic_on = _as_bool(c, "MODEL.MASK_FORMER.TEST.SEMANTIC_ON")
    panoptic_on = _as_bool(c, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON")
    mask_bg = c.get("MODEL.MASK_FORMER.TEST.MASK_BG")
    _require(
        not (mask_bg and (semantic_on or panoptic_on)),
        "MODEL.MASK_FORMER.TEST.MASK_BG",
        mask_bg,
        "with SEMANTIC_ON or PANOPTIC_ON it adds a background class to the base head (official "
        "scripts pass MODEL.MASK_FORMER.TEST.MASK_BG False)",
    )
    if c.get("MODEL.MASK_FORMER.TEST.INSTANCE_ON"):
        notes.append(
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON: instance outputs are not produced (ignored)"
        )

    # ---- continual ------------------------------------------------------------------------------
    base_cls, inc_cls = _as_int(c, "CONT.BASE_CLS"), _as_int(c, "CONT.INC_CLS")
    task = _as_int(c, "CONT.TASK")
    _require(base_cls > 0, "CONT.BASE_CLS", base_cls, "must be positive")
    _require(task >= 0, "CONT.TASK", task, "must be >= 0")
    _require(inc_cls > 0 or task == 0, "CONT.INC_CLS", inc_cls, "must be positive")
    order = c.get("CONT.ORDER")
    _require(
        isinstance(order, (list, tuple))
        and all(isinstance(x, int) and not isinstance(x, bool) for x in order),
        "CONT.ORDER",
        order,
        "must be a list of class ids",
    )
    order = list(order)
    kind = _dataset_kind(c)
    data: dict = {"dataset": kind}
    if categories is None:
        catalog = data["catalog"] = _catalog_of(c)
        valid_ids = {
            ct["contiguous_id"] if catalog == "coco" else ct["id"] for ct in load_catalog(catalog)
        }
        valid = f"the {catalog} catalog (ADE20K 1..150, COCO contiguous 1..133)"
    else:
        _check_custom_classes(c, order, categories, kind)
        catalog = ""
        if kind == "semantic":
            data["num_classes"] = len(categories)
        valid_ids = set(range(1, len(categories) + 1))
        valid = f"1..{len(categories)}, the positions of the categories file's classes"
    bad = [x for x in order if x not in valid_ids]
    _require(not bad, "CONT.ORDER", bad[:10], f"ids outside {valid}")
    _require(len(set(order)) == len(order), "CONT.ORDER", order[:10], "duplicate ids")
    seen = base_cls + task * inc_cls
    _require(
        seen <= len(order),
        "CONT.TASK",
        task,
        f"BASE_CLS + TASK * INC_CLS = {seen} exceeds the {len(order)} classes of CONT.ORDER",
    )
    rest = len(order) - base_cls
    if inc_cls > 0 and rest % inc_cls == 0:
        scenario = f"{base_cls}-{inc_cls}"
        all_steps = [base_cls] + [inc_cls] * (rest // inc_cls)
    else:
        full = rest // inc_cls if inc_cls > 0 else 0
        all_steps = (
            [base_cls]
            + [inc_cls] * full
            + ([rest - full * inc_cls] if rest - full * inc_cls else [])
        )
        scenario = ",".join(str(s) for s in all_steps)
        notes.append(
            f"the classes after the base step do not divide into steps of {inc_cls}: "
            f"scenario {scenario}"
        )
    classes_per_step = [base_cls] + [inc_cls] * task

    num_prompts = _as_int(c, "CONT.NUM_PROMPTS")
    _require(num_prompts >= 0, "CONT.NUM_PROMPTS", num_prompts, "must be >= 0")
    prompt_deep = _as_bool(c, "CONT.PROMPT_DEEP")
    prompt_mask_mlp = _as_bool(c, "CONT.PROMPT_MASK_MLP")
    deltas = _deltas(c)
    if num_prompts > 0:
        no_obj = c.get("CONT.PROMPT_NO_OBJ_MLP")
        _require(
            no_obj is False,
            "CONT.PROMPT_NO_OBJ_MLP",
            no_obj,
            "the per-group no-object MLP is not implemented",
        )
        if task > 0:
            _require(
                prompt_mask_mlp,
                "CONT.PROMPT_MASK_MLP",
                prompt_mask_mlp,
                "with prompts the official inference needs one mask MLP per prompt group "
                "(PROMPT_MASK_MLP False crashes officially)",
            )
        else:
            _require(
                deltas[0] == 0.0,
                "CONT.LOGIT_MANI_DELTAS",
                c.get("CONT.LOGIT_MANI_DELTAS"),
                "at CONT.TASK 0 with NUM_PROMPTS > 0 the official inference manipulates the base "
                "queries' no-object logit alone; pass CONT.NUM_PROMPTS 0 or a zero delta",
            )
    method = "eclipse" if (num_prompts > 0 or task == 0) else "finetune"
    if num_prompts == 0:
        notes.append(
            "CONT.NUM_PROMPTS 0: no prompt modules (a plain Mask2Former"
            + (" with one class head per step" if task else "")
            + "); no logit manipulation"
        )

    deep_cls = _as_bool(c, "CONT.DEEP_CLS")
    use_bias = _as_bool(c, "CONT.USE_BIAS")
    decoder = {
        "hidden_dim": hidden,
        "num_heads": nheads,
        "ffn_dim": _as_int(c, "MODEL.MASK_FORMER.DIM_FEEDFORWARD"),
        "num_layers": dec_layers - 1,
        "num_queries": _as_int(c, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"),
        "pre_norm": _as_bool(c, "MODEL.MASK_FORMER.PRE_NORM"),
        "enforce_input_project": _as_bool(c, "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ"),
        "deep_cls": deep_cls,
        "cls_bias": use_bias,
    }
    continual: dict = {"scenario": scenario, "order": order, "method": method, "deltas": deltas}
    if num_prompts > 0:  # otherwise keep our ECLIPSE defaults for any later prompt tuning
        decoder.update(prompt_deep=prompt_deep, prompt_mask_mlp=prompt_mask_mlp)
        continual["num_prompts"] = num_prompts
    lr, iters = _as_float(c, "SOLVER.BASE_LR"), _as_int(c, "SOLVER.MAX_ITER")
    solver = {"batch_size": _as_int(c, "SOLVER.IMS_PER_BATCH")}
    loss = {
        "mask_weight": _as_float(c, "MODEL.MASK_FORMER.MASK_WEIGHT"),
        "dice_weight": _as_float(c, "MODEL.MASK_FORMER.DICE_WEIGHT"),
    }
    if task == 0:
        solver.update(lr=lr, iterations=iters)
        loss["class_weight"] = _as_float(c, "MODEL.MASK_FORMER.CLASS_WEIGHT")
    else:
        continual.update(
            lr=lr, iterations=iters, class_weight=_as_float(c, "MODEL.MASK_FORMER.CLASS_WEIGHT")
        )
    tree = {
        "model": {
            **backbone,
            "pixel_decoder": {
                "conv_dim": conv_dim,
                "mask_dim": _as_int(c, "MODEL.SEM_SEG_HEAD.MASK_DIM"),
                "num_layers": _as_int(c, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"),
                # fixed in the official pixel decoder whatever the config says
                "num_heads": nheads,
                "num_points": 4,
                "ffn_dim": 1024,
                "num_groups": 32,
            },
            "decoder": decoder,
            "base_classes": base_cls,
        },
        "loss": loss,
        "data": data,
        "solver": solver,
        "continual": continual,
        "test": {
            "object_mask_threshold": _as_float(c, "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD"),
            "overlap_threshold": _as_float(c, "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD"),
        },
    }
    cfg = config_from_dict(tree)
    info = {
        "step": task,
        "classes_per_step": classes_per_step,
        "scenario": scenario,
        "scenario_steps": all_steps,
        "method": method,
        "num_prompts": num_prompts,
        "catalog": catalog,
        "notes": notes,
    }
    return cfg, info
