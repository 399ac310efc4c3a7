"""Class names of the datasets the original Mask2Former model zoo was trained on.

The order of every list is the order of the original model's class logits (the contiguous ids Detectron2 gives the
categories when it registers each dataset), so `id2label` is simply the list index. Names and thing/stuff flags are
those of the original repository's dataset registrations (Detectron2's builtin metadata for COCO, Cityscapes and
ADE20K semantic; Mask2Former's own registrations for ADE20K panoptic and instance, and Mapillary Vistas).
"""

from __future__ import annotations

from dataclasses import dataclass

# COCO panoptic: 80 things followed by 53 stuff classes (133 logits).
_COCO_THINGS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]  # fmt: skip
_COCO_STUFF = [
    "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood", "flower", "fruit",
    "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform", "playingfield", "railroad", "river",
    "road", "roof", "sand", "sea", "shelf", "snow", "stairs", "tent", "towel", "wall-brick", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "window-blind", "window-other", "tree-merged", "fence-merged",
    "ceiling-merged", "sky-other-merged", "cabinet-merged", "table-merged", "floor-other-merged",
    "pavement-merged", "mountain-merged", "grass-merged", "dirt-merged", "paper-merged", "food-other-merged",
    "building-other-merged", "rock-merged", "wall-other-merged", "rug-merged",
]  # fmt: skip

# ADE20K SceneParsing 150 classes (semantic and panoptic share names and order); True marks the 100 things.
_ADE20K_150 = [
    ("wall", False), ("building", False), ("sky", False), ("floor", False), ("tree", False),
    ("ceiling", False), ("road, route", False), ("bed", True), ("window ", True), ("grass", False),
    ("cabinet", True), ("sidewalk, pavement", False), ("person", True), ("earth, ground", False), ("door", True),
    ("table", True), ("mountain, mount", False), ("plant", False), ("curtain", True), ("chair", True),
    ("car", True), ("water", False), ("painting, picture", True), ("sofa", True), ("shelf", True),
    ("house", False), ("sea", False), ("mirror", True), ("rug", False), ("field", False),
    ("armchair", True), ("seat", True), ("fence", True), ("desk", True), ("rock, stone", False),
    ("wardrobe, closet, press", True), ("lamp", True), ("tub", True), ("rail", True), ("cushion", True),
    ("base, pedestal, stand", False), ("box", True), ("column, pillar", True), ("signboard, sign", True),
    ("chest of drawers, chest, bureau, dresser", True), ("counter", True), ("sand", False), ("sink", True),
    ("skyscraper", False), ("fireplace", True), ("refrigerator, icebox", True),
    ("grandstand, covered stand", False), ("path", False), ("stairs", True), ("runway", False),
    ("case, display case, showcase, vitrine", True), ("pool table, billiard table, snooker table", True),
    ("pillow", True), ("screen door, screen", True), ("stairway, staircase", False), ("river", False),
    ("bridge, span", False), ("bookcase", True), ("blind, screen", False), ("coffee table", True),
    ("toilet, can, commode, crapper, pot, potty, stool, throne", True), ("flower", True), ("book", True),
    ("hill", False), ("bench", True), ("countertop", True), ("stove", True), ("palm, palm tree", True),
    ("kitchen island", True), ("computer", True), ("swivel chair", True), ("boat", True), ("bar", False),
    ("arcade machine", True), ("hovel, hut, hutch, shack, shanty", False), ("bus", True), ("towel", True),
    ("light", True), ("truck", True), ("tower", False), ("chandelier", True),
    ("awning, sunshade, sunblind", True), ("street lamp", True), ("booth", True), ("tv", True), ("plane", True),
    ("dirt track", False), ("clothes", True), ("pole", True), ("land, ground, soil", False),
    ("bannister, banister, balustrade, balusters, handrail", True),
    ("escalator, moving staircase, moving stairway", False), ("ottoman, pouf, pouffe, puff, hassock", True),
    ("bottle", True), ("buffet, counter, sideboard", False), ("poster, posting, placard, notice, bill, card", False),
    ("stage", False), ("van", True), ("ship", True), ("fountain", True),
    ("conveyer belt, conveyor belt, conveyer, conveyor, transporter", False), ("canopy", False),
    ("washer, automatic washer, washing machine", True), ("plaything, toy", True), ("pool", False),
    ("stool", True), ("barrel, cask", True), ("basket, handbasket", True), ("falls", False), ("tent", False),
    ("bag", True), ("minibike, motorbike", True), ("cradle", False), ("oven", True), ("ball", True),
    ("food, solid food", True), ("step, stair", True), ("tank, storage tank", False), ("trade name", True),
    ("microwave", True), ("pot", True), ("animal", True), ("bicycle", True), ("lake", False),
    ("dishwasher", True), ("screen", True), ("blanket, cover", False), ("sculpture", True),
    ("hood, exhaust hood", True), ("sconce", True), ("vase", True), ("traffic light", True), ("tray", True),
    ("trash can", True), ("fan", True), ("pier", False), ("crt screen", False), ("plate", True),
    ("monitor", True), ("bulletin board", True), ("shower", False), ("radiator", True),
    ("glass, drinking glass", True), ("clock", True), ("flag", True),
]  # fmt: skip

# ADE20K instance segmentation: the 100 thing classes, under the short names of its instance annotations.
_ADE20K_INSTANCE = [
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car", "painting", "sofa",
    "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "box", "column", "signboard", "chest of drawers", "counter", "sink", "fireplace", "refrigerator", "stairs",
    "case", "pool table", "pillow", "screen door", "bookcase", "coffee table", "toilet", "flower", "book", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "arcade machine", "bus",
    "towel", "light", "truck", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "apparel", "pole", "bannister", "ottoman", "bottle", "van", "ship", "fountain", "washer", "plaything", "stool",
    "barrel", "basket", "bag", "minibike", "oven", "ball", "food", "step", "trade name", "microwave", "pot",
    "animal", "bicycle", "dishwasher", "screen", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "plate", "monitor", "bulletin board", "radiator", "glass", "clock", "flag",
]  # fmt: skip

# Cityscapes: the 19 evaluated classes in trainId order; the last 8 are things.
_CITYSCAPES = [
    ("road", False), ("sidewalk", False), ("building", False), ("wall", False), ("fence", False), ("pole", False),
    ("traffic light", False), ("traffic sign", False), ("vegetation", False), ("terrain", False), ("sky", False),
    ("person", True), ("rider", True), ("car", True), ("truck", True), ("bus", True), ("train", True),
    ("motorcycle", True), ("bicycle", True),
]  # fmt: skip

# Mapillary Vistas v1.2: the 65 evaluated classes (readable names; "Unlabeled" is the ignore label 65).
_MAPILLARY_VISTAS = [
    ("Bird", True), ("Ground Animal", True), ("Curb", False), ("Fence", False), ("Guard Rail", False),
    ("Barrier", False), ("Wall", False), ("Bike Lane", False), ("Crosswalk - Plain", True), ("Curb Cut", False),
    ("Parking", False), ("Pedestrian Area", False), ("Rail Track", False), ("Road", False), ("Service Lane", False),
    ("Sidewalk", False), ("Bridge", False), ("Building", False), ("Tunnel", False), ("Person", True),
    ("Bicyclist", True), ("Motorcyclist", True), ("Other Rider", True), ("Lane Marking - Crosswalk", True),
    ("Lane Marking - General", False), ("Mountain", False), ("Sand", False), ("Sky", False), ("Snow", False),
    ("Terrain", False), ("Vegetation", False), ("Water", False), ("Banner", True), ("Bench", True),
    ("Bike Rack", True), ("Billboard", True), ("Catch Basin", True), ("CCTV Camera", True), ("Fire Hydrant", True),
    ("Junction Box", True), ("Mailbox", True), ("Manhole", True), ("Phone Booth", True), ("Pothole", False),
    ("Street Light", True), ("Pole", True), ("Traffic Sign Frame", True), ("Utility Pole", True),
    ("Traffic Light", True), ("Traffic Sign (Back)", True), ("Traffic Sign (Front)", True), ("Trash Can", True),
    ("Bicycle", True), ("Boat", True), ("Bus", True), ("Car", True), ("Caravan", True), ("Motorcycle", True),
    ("On Rails", False), ("Other Vehicle", True), ("Trailer", True), ("Truck", True), ("Wheeled Slow", True),
    ("Car Mount", False), ("Ego Vehicle", False),
]  # fmt: skip


@dataclass(frozen=True)
class DatasetMeta:
    """Classes of one dataset and task, in logit order.

    Attributes:
        name: key of the dataset in [`DATASETS`] (e.g. `"coco_panoptic"`).
        title: readable name of the dataset and its evaluation split, for model cards.
        hub_id: the dataset's name for the model card's `datasets` metadata.
        classes: class names; index i is the model's class i.
        is_thing: per class, whether it is a countable thing (instances) or stuff.
        ignore_value: label value ignored in the semantic label maps.
    """

    name: str
    title: str
    hub_id: str
    classes: tuple[str, ...]
    is_thing: tuple[bool, ...]
    ignore_value: int = 255

    @property
    def num_labels(self) -> int:
        return len(self.classes)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.classes))

    @property
    def thing_ids(self) -> list[int]:
        """Class indices of the thing classes (for `M2FConfig.thing_ids`)."""
        return [i for i, thing in enumerate(self.is_thing) if thing]


def _meta(name, title, hub_id, pairs, ignore_value=255) -> DatasetMeta:
    return DatasetMeta(
        name=name,
        title=title,
        hub_id=hub_id,
        classes=tuple(p[0] for p in pairs),
        is_thing=tuple(bool(p[1]) for p in pairs),
        ignore_value=ignore_value,
    )


_COCO_PANOPTIC_PAIRS = [(n, True) for n in _COCO_THINGS] + [(n, False) for n in _COCO_STUFF]

DATASETS: dict[str, DatasetMeta] = {
    meta.name: meta
    for meta in (
        _meta("coco_panoptic", "COCO panoptic val2017", "coco", _COCO_PANOPTIC_PAIRS),
        _meta("coco_instance", "COCO instances val2017", "coco", [(n, True) for n in _COCO_THINGS]),
        _meta("ade20k_semantic", "ADE20K val (150 classes)", "scene_parse_150", _ADE20K_150),
        _meta("ade20k_panoptic", "ADE20K panoptic val", "scene_parse_150", _ADE20K_150),
        _meta("ade20k_instance", "ADE20K instance val", "scene_parse_150", [(n, True) for n in _ADE20K_INSTANCE]),
        _meta("cityscapes_semantic", "Cityscapes val", "cityscapes", _CITYSCAPES),
        _meta("cityscapes_panoptic", "Cityscapes panoptic val", "cityscapes", _CITYSCAPES),
        _meta("cityscapes_instance", "Cityscapes instance val", "cityscapes", [p for p in _CITYSCAPES if p[1]]),
        # Mapillary Vistas marks unlabeled pixels with 65, not 255.
        _meta(
            "mapillary_vistas_semantic", "Mapillary Vistas val", "mapillary_vistas", _MAPILLARY_VISTAS, ignore_value=65
        ),
        _meta(
            "mapillary_vistas_panoptic",
            "Mapillary Vistas panoptic val",
            "mapillary_vistas",
            _MAPILLARY_VISTAS,
            ignore_value=65,
        ),
    )
}


def get_dataset_meta(name: str) -> DatasetMeta:
    """The [`DatasetMeta`] registered under `name`; raises `KeyError` listing the known names."""
    if name not in DATASETS:
        raise KeyError(f"dataset={name!r} is not known; expected one of {sorted(DATASETS)}.")
    return DATASETS[name]


# Share of class names that must agree, position by position, for a label set to be recognised as a dataset's:
# checkpoints converted by others spell some names differently (ADE20K's "windowpane" for "window ").
_NAME_AGREEMENT = 0.9


def _name_key(name: str) -> str:
    """A class name's first comma-separated synonym, lower case ("road, route" -> "road")."""
    return str(name).split(",")[0].strip().lower()


def _names_agree(ours: str, theirs: str) -> bool:
    a, b = _name_key(ours), _name_key(theirs)
    return bool(a) and bool(b) and (a == b or a.startswith(b) or b.startswith(a))


def match_dataset(id2label: dict) -> DatasetMeta | None:
    """The dataset whose classes `id2label` lists (same number, same order, at least 90% of the names agreeing),
    or None when no dataset, or datasets that disagree on which classes are things, fit."""
    try:
        names = [id2label[i] for i in range(len(id2label))]
    except KeyError:
        names = [id2label.get(str(i)) for i in range(len(id2label))]
    if not names or any(name is None for name in names):
        return None
    found = [
        meta
        for meta in DATASETS.values()
        if meta.num_labels == len(names)
        and sum(_names_agree(ours, theirs) for ours, theirs in zip(meta.classes, names))
        >= _NAME_AGREEMENT * len(names)
    ]
    if not found or len({meta.is_thing for meta in found}) != 1:
        return None
    return found[0]
