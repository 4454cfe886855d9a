"""The panoptic and instance datasets of ReinPanoptic, registered lazily under
$DETECTRON2_DATASETS: registration never touches the disk; loading a name whose files are
missing says which, with the layout and the preparation script to run.

Every ``<dataset>_panoptic_<split>`` gives detectron2's panoptic records (as
``load_coco_panoptic_json`` gives them, plus ``sem_seg_file_name``) and every
``<dataset>_instance_<split>`` detectron2's COCO instance records (``load_coco_json``), both
over the same 19 classes (``classes.py``). Cityscapes panoptic keeps detectron2's own names
``cityscapes_fine_panoptic_{train,val}``, whose metadata agrees with ours."""
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.cityscapes_panoptic import register_all_cityscapes_panoptic

from rein_d2.data.datasets.common import _missing_root_error, datasets_root

from .classes import IGNORE_LABEL, LABEL_DIVISOR, instance_metadata, panoptic_metadata

__all__ = ["DATASETS", "OUT", "ACDC_CONDITIONS", "LAYOUTS", "PREPARE_SCRIPT", "register_all", "load_panoptic_records",
           "register_cityscapes_panoptic", "CITYSCAPES_PANOPTIC_NAMES"]

OUT = "panoptic_cs19"  # the folder, in each dataset's folder, of what the scripts write
PREPARE_SCRIPT = "projects/ReinPanoptic/prepare/prepare_{}_panoptic.py"
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")
CITYSCAPES_PANOPTIC_NAMES = ("cityscapes_fine_panoptic_train", "cityscapes_fine_panoptic_val")

_OUTPUTS = """  <dataset>/{out}/<split>.json              COCO panoptic json (category ids: Cityscapes label ids)
  <dataset>/{out}/<split>_instances.json    COCO instances json of the 8 thing classes
  <dataset>/{out}/<split>/                  panoptic PNGs;  <split>_semantic/: train-id PNGs""".format(out=OUT)
LAYOUTS = {
    "cityscapes": """  cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
  cityscapes/gtFine/{train,val}/<city>/*_gtFine_{labelIds,instanceIds}.png
  written by the script: cityscapes/gtFine/cityscapes_panoptic_{train,val}{.json,/} (cityscapesscripts),
  *_gtFine_labelTrainIds.png, cityscapes/gtFine/cityscapes_instances_{train,val}.json""",
    "mapillary": """  mapillary/{training,validation}/images/*.jpg
  mapillary/{training,validation}/v1.2/panoptic/{*.png,panoptic_2018.json}   (v2.0 download)
  or mapillary/{training,validation}/panoptic/{*.png,panoptic_2018.json}     (v1.x download)
""" + _OUTPUTS,
    "bdd100k": """  bdd100k/images/10k/{train,val}/*.jpg
  bdd100k/labels/pan_seg/bitmasks/{train,val}/*.png   (RGBA bitmasks)
""" + _OUTPUTS,
    "acdc": """  acdc/rgb_anon/<fog|night|rain|snow>/{{train,val}}/<seq>/*_rgb_anon.png
  acdc/gt_panoptic/<fog|night|rain|snow>/{{train,val}}/<seq>/*_gt_panoptic.png
  acdc/gt_panoptic/<condition>/<condition>_{{train,val}}_gt_panoptic.json
  written by the script: acdc/{out}/{{<condition>_,}}<split>{{.json,_instances.json}},
  acdc/{out}/{{panoptic,semantic}}/<condition>/<split>/<seq>/*_gt_panoptic.png""".format(out=OUT),
    "synthia": """  synthia/RGB/*.png
  synthia/GT/LABELS/*.png   (16-bit, 3 channels: class id, instance id)
""" + _OUTPUTS,
}


def _spec(dataset, raw, image_root, out_split, size, json_name=None):
    """Paths (relative to the datasets root) of one split. raw: the downloaded folder that must
    exist; out_split: the split's name in <dataset>/panoptic_cs19/."""
    out = f"{dataset}/{OUT}"
    json_name = json_name or out_split
    return dict(dataset=dataset, raw=raw, image_root=image_root, size=size,
                panoptic_root=f"{out}/{out_split}", sem_seg_root=f"{out}/{out_split}_semantic",
                panoptic_json=f"{out}/{json_name}.json", instances_json=f"{out}/{json_name}_instances.json")


# split name -> spec; the names are <dataset>_{panoptic,instance}_<split>.
DATASETS = {}
for _split, _dir, _n in (("train", "training", 18000), ("val", "validation", 2000)):
    DATASETS[f"mapillary_{_split}"] = _spec("mapillary", f"mapillary/{_dir}", f"mapillary/{_dir}/images", _dir, _n)
for _split, _n in (("train", 7000), ("val", 1000)):
    DATASETS[f"bdd100k_{_split}"] = _spec("bdd100k", f"bdd100k/labels/pan_seg/bitmasks/{_split}",
                                          f"bdd100k/images/10k/{_split}", _split, _n)
ACDC_SIZES = {"fog": (400, 100), "night": (400, 106), "rain": (400, 100), "snow": (400, 100)}
for _i, _split in enumerate(("train", "val")):
    for _cond in ACDC_CONDITIONS:
        DATASETS[f"acdc_{_cond}_{_split}"] = dict(
            _spec("acdc", f"acdc/gt_panoptic/{_cond}", "acdc/rgb_anon", "panoptic",
                  ACDC_SIZES[_cond][_i], json_name=f"{_cond}_{_split}"), sem_seg_root=f"acdc/{OUT}/semantic")
    DATASETS[f"acdc_{_split}"] = dict(
        _spec("acdc", "acdc/gt_panoptic", "acdc/rgb_anon", "panoptic",
              sum(s[_i] for s in ACDC_SIZES.values()), json_name=_split), sem_seg_root=f"acdc/{OUT}/semantic")
DATASETS["synthia_train"] = _spec("synthia", "synthia/GT/LABELS", "synthia/RGB", "train", 9400)
for _split, _n in (("train", 2975), ("val", 500)):  # instances only: the panoptic names are detectron2's
    DATASETS[f"cityscapes_{_split}"] = dict(
        dataset="cityscapes", raw=f"cityscapes/gtFine/{_split}", image_root=f"cityscapes/leftImg8bit/{_split}",
        instances_json=f"cityscapes/gtFine/cityscapes_instances_{_split}.json", size=_n)


def _names(key):
    dataset, split = key.split("_", 1)
    return f"{dataset}_panoptic_{split}", f"{dataset}_instance_{split}"


def _check_prepared(name, spec, root, json_key):
    raw = os.path.join(root, spec["raw"])
    script = PREPARE_SCRIPT.format(spec["dataset"])
    if not os.path.isdir(raw):
        raise _missing_root_error(name, raw, LAYOUTS[spec["dataset"]], script)
    path = os.path.join(root, spec[json_key])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Dataset '{name}': {path} not found: the raw files are there but have not been "
            f"converted yet. Run: python {script} --root {root} (datasets are looked for under "
            f"the environment variable DETECTRON2_DATASETS, now {datasets_root()!r}).")
    return path


def load_panoptic_records(json_file, image_root, panoptic_root, sem_seg_root, meta):
    """detectron2's ``load_coco_panoptic_json`` records, the image taken from the json's
    ``images`` entry (these datasets' images are not all ``<stem>.jpg`` in one folder, which
    detectron2's loader assumes), plus ``sem_seg_file_name`` (the train-id PNG beside)."""
    with open(json_file) as f:
        data = json.load(f)
    images = {i["id"]: i for i in data["images"]}
    things, stuff = meta["thing_dataset_id_to_contiguous_id"], meta["stuff_dataset_id_to_contiguous_id"]
    records = []
    for ann in data["annotations"]:
        segments = []
        for s in ann["segments_info"]:
            isthing = s["category_id"] in things
            segments.append(dict(s, category_id=(things if isthing else stuff)[s["category_id"]], isthing=isthing))
        records.append({
            "file_name": os.path.join(image_root, images[ann["image_id"]]["file_name"]),
            "image_id": ann["image_id"],
            "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
            "sem_seg_file_name": os.path.join(sem_seg_root, ann["file_name"]),
            "segments_info": segments,
        })
    return records


def _register_panoptic(name, spec, root):
    meta = panoptic_metadata()
    p = {k: os.path.join(root, spec[k]) for k in ("image_root", "panoptic_root", "sem_seg_root",
                                                 "panoptic_json", "instances_json")}

    def load():
        _check_prepared(name, spec, root, "panoptic_json")
        return load_panoptic_records(p["panoptic_json"], p["image_root"], p["panoptic_root"],
                                     p["sem_seg_root"], meta)

    DatasetCatalog.register(name, load)
    # The keys detectron2's register_coco_panoptic sets, plus sem_seg_root for the mIoU and
    # domain (rein_d2's DG evaluation groups test sets by it).
    MetadataCatalog.get(name).set(
        panoptic_root=p["panoptic_root"], image_root=p["image_root"], panoptic_json=p["panoptic_json"],
        json_file=p["instances_json"], sem_seg_root=p["sem_seg_root"], evaluator_type="coco_panoptic_seg",
        ignore_label=IGNORE_LABEL, label_divisor=LABEL_DIVISOR, domain=spec["dataset"], **meta)


def _register_instances(name, spec, root):
    json_file, image_root = os.path.join(root, spec["instances_json"]), os.path.join(root, spec["image_root"])

    def load():
        _check_prepared(name, spec, root, "instances_json")
        return load_coco_json(json_file, image_root, name)

    DatasetCatalog.register(name, load)
    # As detectron2's register_coco_instances sets it (plus rein_d2's domain).
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco",
                                  domain=spec["dataset"], **instance_metadata())


def _remove(name):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def register_cityscapes_panoptic(root):
    """(Re-)register detectron2's ``cityscapes_fine_panoptic_{train,val}`` for ``root``
    (detectron2 registers them once, for the root its import saw)."""
    for name in CITYSCAPES_PANOPTIC_NAMES:
        _remove(name)
    register_all_cityscapes_panoptic(root)


def register_all(root=None, replace=False):
    """Register every name for ``root`` (default: $DETECTRON2_DATASETS, as detectron2 reads
    it). Names already registered are kept unless ``replace`` (then detectron2's Cityscapes
    panoptic names are registered again for ``root`` as well)."""
    root = root or datasets_root()
    if replace:
        register_cityscapes_panoptic(root)
    for name in CITYSCAPES_PANOPTIC_NAMES:  # detectron2's set no domain: a Cityscapes val in a
        if name in DatasetCatalog.list():   # Cityscapes-trained run is then its source, not a target
            MetadataCatalog.get(name).set(domain="cityscapes")
    for key, spec in DATASETS.items():
        panoptic, instance = _names(key)
        for name, register in ((panoptic, _register_panoptic), (instance, _register_instances)):
            if register is _register_panoptic and "panoptic_json" not in spec:
                continue  # Cityscapes: detectron2's cityscapes_fine_panoptic_* serve
            if name in DatasetCatalog.list():
                if not replace:
                    continue
                _remove(name)
            register(name, spec, root)
