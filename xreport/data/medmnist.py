"""MedMNIST ``.npz`` files (2D sets, any size): lookup by name, validation, class names, and
the source adapter (``MedMNISTSource``), the one place an ``.npz`` is opened."""
from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig, PreprocessConfig
from ..errors import DataError, OfflineError
from ..limits import check_class_count
from ..runs import sha256_file
from .base import SPLITS, Dataset, Split
from .preprocess import preprocess_stack
from .sources import (DataSource, RawExample, SourceProbe, check_classes, held_out_size, hwc,
                      names_and_task, pick_per_class)

logger = logging.getLogger(__name__)

SIZES = (28, 64, 128, 224)
_ORGAN = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
          "lung-left", "lung-right", "pancreas", "spleen"]
# Class names of the MedMNIST v2 2D sets, in label order (from the sets' published INFO).
CLASS_NAMES: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    # MedMNIST's INFO labels RetinaMNIST "0".."4"; these are the DeepDRiD (ICDR) grades they mean.
    "retinamnist": ["0: no DR", "1: mild NPDR", "2: moderate NPDR", "3: severe NPDR",
                    "4: proliferative DR"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"],
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma",
                  "colorectal adenocarcinoma epithelium"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "tissuemnist": ["collecting duct, connecting tubule", "distal convoluted tubule",
                    "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes",
                    "podocytes", "proximal tubule segments", "thick ascending limb"],
    "organamnist": _ORGAN, "organcmnist": _ORGAN, "organsmnist": _ORGAN,
}
_ORGAN_ZH_TW = ["膀胱", "左股骨", "右股骨", "心臟", "左腎", "右腎", "肝臟", "左肺", "右肺", "胰臟", "脾臟"]
_ORGAN_ZH_CN = ["膀胱", "左股骨", "右股骨", "心脏", "左肾", "右肾", "肝脏", "左肺", "右肺", "胰腺", "脾脏"]
# Translations of CLASS_NAMES for the report, same order.
CLASS_NAMES_ZH_TW: dict[str, list[str]] = {
    "pneumoniamnist": ["正常", "肺炎"],
    "breastmnist": ["惡性", "正常或良性"],
    "retinamnist": ["0：無視網膜病變", "1：輕度非增殖性", "2：中度非增殖性", "3：重度非增殖性", "4：增殖性"],
    "dermamnist": ["光化性角化症與上皮內癌", "基底細胞癌", "良性角化樣病變", "皮膚纖維瘤", "黑色素瘤",
                   "黑色素細胞痣", "血管病變"],
    "bloodmnist": ["嗜鹼性球", "嗜酸性球", "紅血球母細胞", "未成熟顆粒球", "淋巴球", "單核球", "嗜中性球",
                   "血小板"],
    "pathmnist": ["脂肪組織", "背景", "碎屑", "淋巴球", "黏液", "平滑肌", "正常結腸黏膜", "癌相關基質",
                  "大腸直腸腺癌上皮"],
    "octmnist": ["脈絡膜新生血管", "糖尿病黃斑部水腫", "隱結", "正常"],
    "tissuemnist": ["集尿管、連接小管", "遠曲小管", "腎絲球內皮細胞", "間質內皮細胞", "白血球", "足細胞",
                    "近曲小管段", "亨利氏環升支粗段"],
    "organamnist": _ORGAN_ZH_TW, "organcmnist": _ORGAN_ZH_TW, "organsmnist": _ORGAN_ZH_TW,
}
CLASS_NAMES_ZH_CN: dict[str, list[str]] = {
    "pneumoniamnist": ["正常", "肺炎"],
    "breastmnist": ["恶性", "正常或良性"],
    "retinamnist": ["0：无视网膜病变", "1：轻度非增殖性", "2：中度非增殖性", "3：重度非增殖性", "4：增殖性"],
    "dermamnist": ["光化性角化病与上皮内癌", "基底细胞癌", "良性角化样病变", "皮肤纤维瘤", "黑色素瘤",
                   "黑色素细胞痣", "血管病变"],
    "bloodmnist": ["嗜碱性粒细胞", "嗜酸性粒细胞", "成红细胞", "未成熟粒细胞", "淋巴细胞", "单核细胞",
                   "中性粒细胞", "血小板"],
    "pathmnist": ["脂肪组织", "背景", "碎屑", "淋巴细胞", "黏液", "平滑肌", "正常结肠黏膜", "癌相关间质",
                  "结直肠腺癌上皮"],
    "octmnist": ["脉络膜新生血管", "糖尿病黄斑水肿", "玻璃膜疣", "正常"],
    "tissuemnist": ["集合管、连接小管", "远曲小管", "肾小球内皮细胞", "间质内皮细胞", "白细胞", "足细胞",
                    "近端小管段", "髓袢升支粗段"],
    "organamnist": _ORGAN_ZH_CN, "organcmnist": _ORGAN_ZH_CN, "organsmnist": _ORGAN_ZH_CN,
}
# The tables above by report language (the one form the data layer hands on).
CLASS_NAMES_I18N: dict[str, dict[str, list[str]]] = {"zh-TW": CLASS_NAMES_ZH_TW, "zh-CN": CLASS_NAMES_ZH_CN}


def class_names_i18n(name: str) -> dict[str, list[str]]:
    """The translated class names of the MedMNIST set ``name``, by language (the languages
    without a table left out)."""
    return {lang: list(table[name]) for lang, table in CLASS_NAMES_I18N.items() if name in table}


ORDINAL = {"retinamnist"}
MULTI_LABEL = {"chestmnist"}
_PYTHON_CLASS = {"pneumoniamnist": "PneumoniaMNIST", "breastmnist": "BreastMNIST",
                 "retinamnist": "RetinaMNIST", "dermamnist": "DermaMNIST", "bloodmnist": "BloodMNIST",
                 "pathmnist": "PathMNIST", "octmnist": "OCTMNIST", "tissuemnist": "TissueMNIST",
                 "organamnist": "OrganAMNIST", "organcmnist": "OrganCMNIST", "organsmnist": "OrganSMNIST"}


def base_name(name_or_path: str | Path) -> str:
    """``pneumoniamnist_64.npz`` -> ``pneumoniamnist``."""
    stem = Path(name_or_path).name.lower()
    stem = stem[:-4] if stem.endswith(".npz") else stem
    return re.sub(r"_(28|64|128|224)$", "", stem)


def search_dirs(*, repo_root: Path | None = None) -> list[Path]:
    """Where a named set is looked for, in order."""
    dirs: list[Path] = []
    env = os.environ.get("XREPORT_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.cwd().parent / "shared" / "data")
    root = repo_root or Path(__file__).resolve().parents[2]
    dirs.append(root.parent / "shared" / "data")
    unique: list[Path] = []
    for d in dirs:
        if all(d.resolve() != u.resolve() for u in unique):
            unique.append(d)
    return unique


def candidate_files(name: str, *, image_size: int | None = None) -> list[str]:
    """File names for a set: the plain file, then the size closest above the run's size."""
    sizes = sorted(SIZES, key=lambda s: (s < (image_size or 0), abs(s - (image_size or 0))))
    return [f"{name}.npz", *[f"{name}_{s}.npz" for s in sizes]]


def find_named(name: str, *, image_size: int | None = None) -> Path:
    """Locate ``<name>.npz`` / ``<name>_<size>.npz``; download with ``medmnist`` if possible."""
    name = name.lower()
    dirs = search_dirs()
    files = candidate_files(name, image_size=image_size)
    for d in dirs:
        for f in files:
            if (d / f).is_file():
                return d / f
    if name in MULTI_LABEL:
        raise DataError(f"{name} is multi-label, which xreport does not support; "
                        f"choose one of {', '.join(sorted(CLASS_NAMES))}")
    if name not in CLASS_NAMES:
        raise DataError(f"data set {name!r} is not a known MedMNIST 2D set, 'phantom', or an existing "
                        f"path; known sets: {', '.join(sorted(CLASS_NAMES))}")
    return _download(name, dirs, image_size=image_size)


def _download(name: str, dirs: list[Path], *, image_size: int | None) -> Path:
    where = " or ".join(str(d) for d in dirs)
    hint = f"{name}.npz not found; put it in {where} (or set XREPORT_DATA_DIR to its folder)"
    try:
        import medmnist  # type: ignore[import-not-found]
    except ImportError:
        raise OfflineError(f"{hint}; the medmnist package is not installed to download it") from None
    size = 28 if not image_size else min(SIZES, key=lambda s: (s < image_size, abs(s - image_size)))
    root = Path(os.environ.get("XREPORT_DATA_DIR") or Path.home() / ".medmnist").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls = getattr(medmnist, _PYTHON_CLASS[name])
        kwargs: dict[str, object] = {"split": "test", "download": True, "root": str(root)}
        if size != 28:
            kwargs["size"] = size
        cls(**kwargs)
    except Exception as exc:  # network, HTTP, checksum, old medmnist without size=
        raise OfflineError(f"{hint}; downloading with medmnist failed ({type(exc).__name__}: {exc})") from None
    path = root / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
    if not path.is_file():
        raise OfflineError(f"{hint}; medmnist did not leave {path}")
    logger.info("downloaded %s to %s", name, path)
    return path


def read_npz(path: Path, splits: tuple[str, ...], *, num_classes: int | None,
             ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Validated (images (N, C, H, W) uint8, labels int64 (N,)) per split, and the class count.

    ``num_classes`` None: the highest label in any split of the file, plus one.
    """
    # np.load reads a non-zip file as a pickle and then blames pickling; say what it is.
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a .npz archive (empty, truncated, or another kind of file)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    with npz:
        keys = set(npz.files)
        for split in splits:
            for part in ("images", "labels"):
                if f"{split}_{part}" not in keys:
                    raise DataError(f"{path}: key '{split}_{part}' is missing; the file has "
                                    f"{', '.join(sorted(keys)) or 'no arrays'}")
        check_declared_sizes(path, [k for k in keys if k.endswith("_labels")]
                             + [f"{s}_images" for s in splits])
        labels = {s: _labels(path, s, _get(npz, path, f"{s}_labels"))
                  for s in sorted({k[:-7] for k in keys if k.endswith("_labels")})}
        if num_classes is None:
            num_classes = 1 + max((int(v.max()) for v in labels.values() if v.size), default=1)
            check_class_count(num_classes, where=str(path), what=f"the highest label, {num_classes - 1},")
            _check_no_gaps(path, labels, num_classes)
        out = {}
        for split in splits:
            images = _images(path, split, _get(npz, path, f"{split}_images"))
            y = labels[split]
            if images.shape[0] != y.shape[0]:
                raise DataError(f"{path}: '{split}_images' has {images.shape[0]} images but "
                                f"'{split}_labels' has {y.shape[0]} labels")
            if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise DataError(f"{path}: '{split}_labels' has labels in {int(y.min())}..{int(y.max())}; "
                                f"valid range is 0..{num_classes - 1}")
            out[split] = (images, y)
    return out, num_classes


def declared_array(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype, int, int]:
    """(shape, dtype, declared bytes, bytes the zip member holds) of ``key`` in an .npz,
    read from the .npy header alone: nothing is allocated."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _fortran, dtype = reader(fh)
                header_len = fh.tell()
    except KeyError:
        raise DataError(f"{path}: key '{key}' is missing") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, SyntaxError) as exc:
        raise DataError(f"{path}: key '{key}' has an unreadable header ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: key '{key}' holds Python objects (dtype {dtype}); expected numbers")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise DataError(f"{path}: key '{key}' declares an invalid shape {shape}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    return tuple(shape), dtype, nbytes, info.file_size - header_len


def check_declared_sizes(path: Path, keys: list[str]) -> None:
    """Refuse arrays whose header declares more bytes than the file holds or than memory
    allows, before numpy allocates them."""
    from ..limits import human, memory_budget

    budget = memory_budget()
    total = 0
    for key in sorted(set(keys)):
        shape, dtype, nbytes, held = declared_array(path, key)
        if nbytes > held:
            raise DataError(f"{path}: key '{key}' declares shape {shape} ({dtype}, {human(nbytes)}) "
                            f"but holds only {human(max(held, 0))}; the file is damaged or forged")
        total += nbytes
        if total > budget:
            raise DataError(f"{path}: key '{key}' declares shape {shape} ({dtype}); the arrays need "
                            f"{human(total)}, more than the {human(budget)} this machine allows "
                            "for one input")


def _check_no_gaps(path: Path, labels: dict[str, np.ndarray], num_classes: int) -> None:
    """Labels 0, 1, 7 would make classes 2..6 with no image in any split: almost surely a
    mistake (the labels must be 0..K-1)."""
    used = set()
    for y in labels.values():
        used |= set(np.unique(y[y >= 0]).tolist()) if y.size else set()
    unused = [i for i in range(num_classes) if i not in used]
    if unused and used:
        raise DataError(f"{path}: labels go up to {num_classes - 1} but class(es) "
                        f"{', '.join(map(str, unused[:5]))} have no image in any split; labels must be "
                        "0..K-1 (or name the classes in data.class_names)")


def _get(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return npz[key]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: key '{key}' cannot be read ({exc})") from None


def _labels(path: Path, split: str, y: np.ndarray) -> np.ndarray:
    key = f"{split}_labels"
    if y.ndim == 2 and y.shape[1] > 1:
        raise DataError(f"{path}: '{key}' has shape {y.shape} (multi-label); xreport needs one "
                        "label per image, shape (N,) or (N, 1)")
    if y.ndim not in (1, 2):
        raise DataError(f"{path}: '{key}' has shape {y.shape}; expected (N,) or (N, 1)")
    y = y.reshape(-1)
    if (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
            and np.all(np.abs(y) < 2**31)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise DataError(f"{path}: '{key}' has dtype {y.dtype}; expected integer class indices")
    return y.astype(np.int64)


def _images(path: Path, split: str, x: np.ndarray) -> np.ndarray:
    key = f"{split}_images"
    if x.ndim == 4 and x.shape[3] in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))
    elif x.ndim == 3:
        x = x[:, None]
    else:
        raise DataError(f"{path}: '{key}' has shape {x.shape}; expected (N, H, W) or (N, H, W, 3) "
                        "(3D MedMNIST sets are not supported)")
    if 0 in x.shape[2:]:
        raise DataError(f"{path}: '{key}' has shape {x.shape}; images must be at least 1x1 pixels")
    if x.dtype != np.uint8:
        x = _as_uint8(path, key, x)
    return np.ascontiguousarray(x)


def _as_uint8(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """Pixels another pipeline stored as integers in 0..255 or as floats in [0, 1] or
    [0, 255] (the two scales float images come in), as uint8; anything else is refused
    rather than guessed at (a 12-bit scan needs a window the data set must choose)."""
    if x.size == 0:
        return x.astype(np.uint8)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{path}: '{key}' has dtype {x.dtype}; expected pixels 0..255 (uint8) "
                        "or floats in [0, 1]")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{path}: '{key}' holds NaN or infinite pixels")
    low, high = float(x.min()), float(x.max())
    if x.dtype.kind in "iu":
        if low >= 0 and high <= 255:
            return x.astype(np.uint8)
        raise DataError(f"{path}: '{key}' has {x.dtype} pixels in {low:g}..{high:g}; expected 0..255 "
                        "(window or rescale them to 8 bits first)")
    if low < 0 or high > 255:
        raise DataError(f"{path}: '{key}' has float pixels in {low:g}..{high:g}; expected [0, 1] or "
                        "[0, 255]")
    scale = 255.0 if high <= 1.0 else 1.0
    logger.info("%s: '%s' holds float pixels in %g..%g; read as %s", path, key, low, high,
                "[0, 1] x 255" if scale != 1.0 else "0..255, rounded")
    x = x.astype(np.float32, copy=x.dtype != np.float32)   # in place from here on
    x *= scale
    np.rint(x, out=x)
    return x.astype(np.uint8)


def _members(path: Path) -> set[str] | None:
    """The member names of the archive from its zip directory alone (np.load would read a
    plain .npy passed off as .npz whole); None when it is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return set(zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


class MedMNISTSource(DataSource):
    """``data.kind = "medmnist"``: a MedMNIST-layout ``.npz`` (``{split}_images``,
    ``{split}_labels``), by path or by set name (``find_named``)."""

    kind = "medmnist"
    file_form = "a MedMNIST .npz"
    suffixes = (".npz",)
    # The fallback for any name that is not a path: asked last.
    priority = -1

    def claims(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".npz"

    def lookup(self, name: str, *, image_size: int | None) -> str | None:
        return str(find_named(name, image_size=image_size).resolve())

    def splits(self, source: str) -> set[str]:
        names = _members(Path(source))
        if names is None:
            return set(SPLITS)
        return {s for s in SPLITS if f"{s}_images.npy" in names}

    def load(self, source: str, data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, *,
             image_size: int, splits: tuple[str, ...]) -> Dataset:
        d = data_cfg
        path = Path(source)
        name = base_name(path)
        table = CLASS_NAMES.get(name)
        expected = len(table) if table else (len(d.class_names) or None)
        arrays, num_classes = read_npz(path, splits, num_classes=expected)
        found = table if table and len(table) == num_classes else [f"class_{i}" for i in range(num_classes)]
        names, task = names_and_task(d, found, where=str(path),
                                     default_task="ordinal" if name in ORDINAL else None)
        check_classes(names, str(path), labelled=True)
        out: dict[str, Split] = {}
        shapes = set()
        for split, (images, labels) in arrays.items():
            shapes.add(images.shape[1:])
            x, _ = preprocess_stack(torch.from_numpy(images), preprocess_cfg, image_size)
            out[split] = Split(split, x, torch.from_numpy(labels), [str(i) for i in range(len(labels))])
        (c, h, w), = shapes if len(shapes) == 1 else ((None, None, None),)
        from_table = bool(table) and names == table   # not renamed by data.class_names
        return Dataset(name=name, source=str(path), kind=self.kind, class_names=names, task=task,
                       splits=out, fingerprint=sha256_file(path),
                       original_size=(int(h), int(w)) if h is not None and w is not None else None,
                       original_channels=c, class_names_i18n=class_names_i18n(name) if from_table else {})

    def probe(self, source: str, data_cfg: DataConfig, *, sample: int) -> SourceProbe:
        """The validated train arrays and the size of the val labels (from its header)."""
        path = Path(source)
        name = base_name(path)
        table = CLASS_NAMES.get(name)
        arrays, k = read_npz(path, ("train",), num_classes=len(table) if table else None)
        images, y_train = arrays["train"]
        # read_npz checked every *_labels array (shape (N,) or (N, 1)); its header tells N.
        n_val = (declared_array(path, "val_labels")[0][0] if "val_labels.npy" in (_members(path) or ())
                 else held_out_size(data_cfg, len(y_train)))
        names = table if table and len(table) == k else [str(i) for i in range(k)]
        names, task = names_and_task(data_cfg, names, where=str(path),
                                     default_task="ordinal" if name in ORDINAL else None)
        return SourceProbe(self.kind, source, min(images.shape[2:]), images.shape[1] == 3,
                           np.bincount(y_train, minlength=k).tolist(), n_val, task, tuple(names))

    def raw_examples(self, source: str, data_cfg: DataConfig, n_per_class: int,
                     rng: np.random.Generator, *, split: str) -> list[RawExample]:
        path = Path(source)
        held = self.splits(source)
        present = [s for s in (split, *SPLITS) if s in held]
        if not present:
            raise DataError(f"{path}: no split with images")
        arrays, _k = read_npz(path, (present[0],), num_classes=None)
        images, labels = arrays[present[0]]
        return [(hwc(images[i]), int(labels[i])) for i in pick_per_class(labels, n_per_class, rng)]
