"""The datasets rein_d2 registers: their layouts under $DETECTRON2_DATASETS, eval sizes and
known split sizes. Registration is lazy and never touches the disk."""
from .common import register_semantic_dataset

_GTAV = """  gta/images/*.png
  gta/labels/*.png              (palette PNGs holding Cityscapes label ids)
  gta/labels_trainid/*.png      (written by datasets/prepare_gtav.py)"""
_CITYSCAPES = """  cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
  cityscapes/gtFine/{train,val}/<city>/*_gtFine_labelIds.png
  cityscapes/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png  (datasets/prepare_cityscapes.py)"""
_SYNTHIA = """  synthia/RGB/*.png
  synthia/GT/LABELS/*.png          (16-bit 3-channel; class id in the red channel)
  synthia/GT/LABELS_trainid/*.png  (written by datasets/prepare_synthia.py)"""
_BDD = """  bdd100k/images/10k/{train,val}/*.jpg
  bdd100k/labels/sem_seg/masks/{train,val}/*.png   (train ids; checked by datasets/prepare_bdd100k.py)"""
_MAPILLARY = """  mapillary/config_v1.2.json                 (older v1.x archives: config.json)
  mapillary/{training,validation}/images/*.jpg
  mapillary/{training,validation}/v1.2/labels/*.png   (older v1.x archives: <split>/labels/*.png)
  mapillary/{training,validation}/v1.2/labels_trainid/*.png  (datasets/prepare_mapillary.py)
  mapillary/validation/half/{images,labels_trainid}/         (datasets/prepare_mapillary.py)"""
_URBANSYN = """  urbansyn/rgb/rgb_<NNNN>.png          (2048x1024)
  urbansyn/ss/ss_<NNNN>.png            (8-bit: train ids 0..18, 19 = unlabelled)
  urbansyn/ss_trainid/ss_<NNNN>.png    (written by datasets/prepare_urbansyn.py)"""
_ACDC = """  acdc/rgb_anon/<fog|night|rain|snow>/{train,val}/<seq>/*_rgb_anon.png
  acdc/gt/<fog|night|rain|snow>/{train,val}/<seq>/*_gt_labelTrainIds.png"""

# name -> registration arguments (dirs relative to the datasets root) and the known split size.
DATASETS = {
    "gtav_train": dict(image_dir="gta/images", label_dir="gta/labels_trainid",
                       image_suffix=".png", label_suffix=".png", eval_size=None,
                       layout=_GTAV, script="datasets/prepare_gtav.py", size=24966),
    "synthia_train": dict(image_dir="synthia/RGB", label_dir="synthia/GT/LABELS_trainid",
                          image_suffix=".png", label_suffix=".png", eval_size=None,
                          layout=_SYNTHIA, script="datasets/prepare_synthia.py", size=9400),
    # every frame, as the release trains on it (its config lists no split); rgb_0001.png pairs
    # with ss_0001.png
    "urbansyn_train": dict(image_dir="urbansyn/rgb", label_dir="urbansyn/ss_trainid",
                           image_suffix=".png", label_suffix=".png", image_prefix="rgb_",
                           label_prefix="ss_", eval_size=None, layout=_URBANSYN,
                           script="datasets/prepare_urbansyn.py", size=7539),
}
for _split, _n in (("train", 2975), ("val", 500)):
    DATASETS[f"cityscapes_rein_{_split}"] = dict(
        image_dir=f"cityscapes/leftImg8bit/{_split}", label_dir=f"cityscapes/gtFine/{_split}",
        image_suffix="_leftImg8bit.png", label_suffix="_gtFine_labelTrainIds.png",
        eval_size=(1024, 512), layout=_CITYSCAPES, script="datasets/prepare_cityscapes.py", size=_n)
# 1/16 of Cityscapes train (the release's "+1/16 of Cityscapes training" setting): the train
# pairs sorted by path (city folder, then frame name), every 16th from the first (186 of 2,975).
DATASETS["cityscapes_rein_train_1_16"] = dict(DATASETS["cityscapes_rein_train"], subset_every=16, size=186)
for _split, _n in (("train", 7000), ("val", 1000)):
    DATASETS[f"bdd100k_sem_seg_{_split}"] = dict(
        image_dir=f"bdd100k/images/10k/{_split}", label_dir=f"bdd100k/labels/sem_seg/masks/{_split}",
        image_suffix=".jpg", label_suffix=".png", eval_size=(1280, 720),
        layout=_BDD, script="datasets/prepare_bdd100k.py", size=_n)
# Mapillary val as the reference scores it: image and label halved beforehand (written by
# datasets/prepare_mapillary.py), then the image resized to 1024x512 with the aspect ratio kept
# (eval_size is that target, not an exact resize). mapillary_val_full: full-resolution labels.
for _name, _dir, _images, _labels, _n in (
        ("mapillary_train", "training", None, None, 18000),
        ("mapillary_val", "validation", "mapillary/validation/half/images",
         "mapillary/validation/half/labels_trainid", 2000),
        ("mapillary_val_full", "validation", None, None, 2000)):
    DATASETS[_name] = dict(
        image_dir=_images or f"mapillary/{_dir}/images",
        label_dir=_labels or f"mapillary/{_dir}/v1.2/labels_trainid",
        image_suffix=".jpg", label_suffix=".png", eval_size=(1024, 512),
        layout=_MAPILLARY, script="datasets/prepare_mapillary.py", size=_n)
DATASETS["mapillary_val"]["label_resolution"] = ("half (datasets/prepare_mapillary.py, as the "
                                                 "reference's mapillary_resize.py)")
ACDC_SIZES = {"fog": (400, 100), "night": (400, 106), "rain": (400, 100), "snow": (400, 100)}
for _cond, _sizes in ACDC_SIZES.items():
    for _split, _n in zip(("train", "val"), _sizes):
        DATASETS[f"acdc_{_cond}_{_split}"] = dict(
            image_dir=f"acdc/rgb_anon/{_cond}/{_split}", label_dir=f"acdc/gt/{_cond}/{_split}",
            image_suffix="_rgb_anon.png", label_suffix="_gt_labelTrainIds.png",
            eval_size=(1920, 1080), layout=_ACDC, script="datasets/prepare_acdc.py", size=_n)


def register_all():
    from detectron2.data import DatasetCatalog

    for name, spec in DATASETS.items():
        if name in DatasetCatalog.list():  # module re-imported (e.g. by importlib in tests)
            continue
        kwargs = {k: v for k, v in spec.items() if k != "size"}
        # what the DG protocol record says of the labels scored against (a dataset registered
        # elsewhere: "as stored")
        kwargs.setdefault("label_resolution", "full")
        register_semantic_dataset(name, **kwargs)
