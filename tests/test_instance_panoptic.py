"""Instance and panoptic segmentation: the post-processing on hand-made logits, the COCO
instance / panoptic dataset mappers, training from instances, and detectron2's evaluators on
tiny datasets written to a temporary folder."""
import json
import math
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_coco_panoptic
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import Instances
from PIL import Image

from rein_d2 import add_rein_config
from rein_d2.data.dataset_mappers import build_test_mapper, build_train_mapper
from rein_d2.data.dataset_mappers.instance import InstanceDatasetMapper
from rein_d2.data.dataset_mappers.panoptic import PanopticDatasetMapper
from rein_d2.evaluation import InProcessPanopticEvaluator  # panopticapi's forked Pool can deadlock
from rein_d2.modeling.head import instance_inference, panoptic_inference
from conftest import config_path
from test_meta_arch import MINI

H, W = 64, 96
SMALL_INPUT = ["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128,
               "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128]


def make_cfg(*opts):
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(config_path("rein_dinov2.yaml"))
    cfg.merge_from_list(MINI + SMALL_INPUT + list(opts))
    return cfg


def logits_from_probs(*rows):
    """Class logits whose softmax is exactly the given probability rows."""
    return torch.tensor(rows, dtype=torch.float64).log().float()


def box_logits(*boxes, value=20.0):
    """Mask logits [len(boxes), H, W]: +value inside each (x0, y0, x1, y1) box, -value outside."""
    out = torch.full((len(boxes), H, W), -value)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = value
    return out


def check_gradients(model):
    for name, p in model.named_parameters():
        if name.startswith("backbone.vit."):
            assert p.grad is None, name
    assert model.backbone.rein.learnable_tokens_b.grad.abs().sum() > 0
    assert model.predictor.querys2feat.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- post-processing, by hand

def test_instance_inference_perfect_prediction():
    cls = logits_from_probs([0.0001, 0.0001, 0.9997, 0.0001],   # class 2
                            [0.9997, 0.0001, 0.0001, 0.0001],   # class 0
                            [0.0001, 0.0001, 0.0001, 0.9997])   # no object
    masks = box_logits((10, 8, 30, 28), (50, 30, 80, 60), (0, 0, 5, 5))
    out = instance_inference(cls, masks, num_classes=3, topk=2)
    assert out.image_size == (H, W)
    assert out.pred_classes.tolist() == [2, 0]
    assert torch.equal(out.pred_masks, masks[:2] > 0)
    assert out.pred_boxes.tensor.tolist() == [[10, 8, 30, 28], [50, 30, 80, 60]]
    quality = torch.sigmoid(torch.tensor(20.0))  # mean foreground probability inside the mask
    torch.testing.assert_close(out.scores, torch.full((2,), 0.9997) * quality)


def test_instance_inference_scores_and_thing_filter():
    cls = logits_from_probs([0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.5, 0.2])
    masks = torch.full((2, H, W), -4.0)
    masks[0, 0, :3] = torch.tensor([2.0, 0.5, -1.0])  # binary mask: the first two pixels only
    masks[1, 10:12, 10:12] = 1.0
    out = instance_inference(cls, masks, num_classes=3, topk=3)
    # top 3 (query, class) pairs: (0, 0) 0.6, (1, 2) 0.5, (0, 1) 0.3
    assert out.pred_classes.tolist() == [0, 2, 1]
    q0 = (1 / (1 + math.exp(-2.0)) + 1 / (1 + math.exp(-0.5))) / 2
    q1 = 1 / (1 + math.exp(-1.0))
    torch.testing.assert_close(out.scores, torch.tensor([0.6 * q0, 0.5 * q1, 0.3 * q0]))
    assert torch.equal(out.pred_masks[0], out.pred_masks[2])
    assert out.pred_masks[0].sum() == 2 and out.pred_boxes.tensor[0].tolist() == [0, 0, 2, 1]
    only_things = instance_inference(cls, masks, num_classes=3, topk=3, thing_ids=[1, 2])
    assert only_things.pred_classes.tolist() == [2, 1]


def test_panoptic_inference_thresholds_and_stuff_merge():
    # classes 0, 1 are things, 2 is stuff; column 3 is no-object
    cls = logits_from_probs([0.97, 0.01, 0.01, 0.01],   # A: thing 0, left third
                            [0.02, 0.90, 0.04, 0.04],   # B: thing 1, the whole top half
                            [0.01, 0.01, 0.97, 0.01],   # C: stuff 2, bottom-left
                            [0.01, 0.01, 0.97, 0.01],   # D: stuff 2, bottom-right
                            [0.50, 0.10, 0.20, 0.20],   # E: score 0.5 < 0.8, bottom-middle
                            [0.01, 0.01, 0.01, 0.97])   # F: no object, everywhere
    masks = box_logits((0, 0, 32, 32), (0, 0, 96, 32), (0, 32, 40, 64), (56, 32, 96, 64),
                       (40, 32, 56, 64), (0, 0, 96, 64))
    seg, info = panoptic_inference(cls, masks, 3, object_mask_threshold=0.8,
                                   overlap_threshold=0.8, thing_ids=[0, 1])
    assert seg.dtype == torch.int32 and seg.shape == (H, W)
    # B keeps 2/3 of its mask (A takes the rest): dropped; E and F are no segments at all
    assert info == [{"id": 1, "isthing": True, "category_id": 0},
                    {"id": 2, "isthing": False, "category_id": 2}]
    assert (seg[:32, :32] == 1).all()
    assert (seg[32:, :40] == 2).all() and (seg[32:, 56:] == 2).all()  # C and D: one segment
    assert (seg[:32, 32:] == 0).all() and (seg[32:, 40:56] == 0).all()  # void
    # a lower overlap threshold keeps B on the part it owns
    seg, info = panoptic_inference(cls, masks, 3, 0.8, 0.5, thing_ids=[0, 1])
    assert {"id": 2, "isthing": True, "category_id": 1} in info and (seg[:32, 32:] == 2).all()


def test_panoptic_inference_empty():
    cls = logits_from_probs([0.01, 0.01, 0.01, 0.97])
    seg, info = panoptic_inference(cls, box_logits((0, 0, 96, 64)), 3, 0.8, 0.8, thing_ids=[0])
    assert info == [] and not seg.any()


# ---------------------------------------------------------------- tiny COCO datasets

def _rgb(seg_id):
    return [seg_id % 256, seg_id // 256 % 256, seg_id // 65536]


def _image(rng, masks):
    image = rng.integers(0, 60, size=(H, W, 3), dtype=np.uint8)
    for i, m in enumerate(masks):
        image[m.astype(bool)] = [200 - 60 * i, 80 + 50 * i, 120]
    return image


def _rect(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture(scope="module")
def instance_dataset(tmp_path_factory):
    """Three 64x96 images with polygon, RLE and crowd objects; COCO category ids 1, 3, 5."""
    root = tmp_path_factory.mktemp("coco_instances")
    rng = np.random.default_rng(0)
    triangle = [[60, 10, 90, 10, 75, 40]]
    blob = np.zeros((H, W), np.uint8)
    blob[40:60, 5:35] = 1
    blob[45:55, 35:45] = 1
    crowd = np.zeros((H, W), np.uint8)
    crowd[2:10, 2:20] = 1
    objects = [  # per image: (category id, polygon list or mask array, iscrowd)
        [(1, _rect(10, 8, 30, 28), 0), (3, _rect(50, 30, 80, 60), 0)],
        [(5, triangle, 0), (1, blob, 0), (3, crowd, 1)],
        [(3, _rect(5, 5, 40, 50), 0), (5, _rect(60, 20, 90, 58), 0), (1, _rect(45, 2, 55, 12), 0)],
    ]
    images, annotations = [], []
    for i, objs in enumerate(objects):
        rles = []
        for cat, segm, crowd_flag in objs:
            if isinstance(segm, list):
                rle = mask_util.merge(mask_util.frPyObjects(segm, H, W))
            else:
                rle = mask_util.encode(np.asfortranarray(segm))
                segm = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
            rles.append(rle)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                                "segmentation": segm, "iscrowd": crowd_flag,
                                "area": float(mask_util.area(rle)),
                                "bbox": mask_util.toBbox(rle).tolist()})
        name = f"im{i}.png"
        Image.fromarray(_image(rng, [mask_util.decode(r) for r in rles])).save(root / name)
        images.append({"id": i + 1, "file_name": name, "height": H, "width": W})
    categories = [{"id": c, "name": f"cat{c}"} for c in (1, 3, 5)]
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": categories}))
    name = f"rein_test_instances_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_file), str(root))
    DatasetCatalog.get(name)  # fills thing_dataset_id_to_contiguous_id in the metadata
    return name


@pytest.fixture(scope="module")
def panoptic_dataset(tmp_path_factory):
    """Two 64x96 images: stuff (id 7) around things 1 and 2, one crowd region of thing 1."""
    root = tmp_path_factory.mktemp("coco_panoptic")
    (root / "images").mkdir()
    (root / "panoptic").mkdir()
    rng = np.random.default_rng(1)
    layouts = [  # per image: (segment id, category id, box, iscrowd); stuff fills the rest
        [(70001, 1, (10, 8, 30, 28), 0), (513, 2, (50, 30, 80, 60), 0)],
        [(258, 2, (5, 5, 40, 50), 0), (66000, 1, (60, 20, 90, 58), 0), (9, 1, (45, 2, 55, 12), 1)],
    ]
    images, annotations = [], []
    for i, layout in enumerate(layouts):
        ids = np.full((H, W), 4000, np.int64)
        segments = [(4000, 7, None, 0)] + layout
        for seg_id, _, (x0, y0, x1, y1), _ in layout:
            ids[y0:y1, x0:x1] = seg_id
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "panoptic" / f"im{i}.png")
        Image.fromarray(_image(rng, [ids == s[0] for s in layout])).save(
            root / "images" / f"im{i}.jpg", quality=95)
        images.append({"id": i + 1, "file_name": f"im{i}.jpg", "height": H, "width": W})
        annotations.append({"image_id": i + 1, "file_name": f"im{i}.png", "segments_info": [
            {"id": s, "category_id": c, "iscrowd": crowd_flag, "area": int((ids == s).sum())}
            for s, c, _, crowd_flag in segments]})
    categories = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 1},
                  {"id": 7, "name": "ground", "isthing": 0}]
    json_file = root / "panoptic.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": categories}))
    # detectron2's "standard" panoptic metadata: contiguous ids over all categories
    meta = {"thing_classes": ["a", "b", "ground"], "stuff_classes": ["a", "b", "ground"],
            "thing_dataset_id_to_contiguous_id": {1: 0, 2: 1},
            "stuff_dataset_id_to_contiguous_id": {7: 2}}
    name = f"rein_test_panoptic_{uuid.uuid4().hex[:8]}"
    register_coco_panoptic(name, meta, str(root / "images"), str(root / "panoptic"),
                           str(json_file))
    return name


# ---------------------------------------------------------------- mappers and training

def test_instance_mapper_and_training(instance_dataset):
    cfg = make_cfg("DATASETS.TRAIN", (instance_dataset,), "INPUT.CROP.ENABLED", True,
                   "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", (56, 80),
                   "INPUT.DATASET_MAPPER_NAME", "instance")
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, InstanceDatasetMapper)
    assert isinstance(build_test_mapper(cfg), InstanceDatasetMapper)
    dicts = DatasetCatalog.get(instance_dataset)
    batch = [mapper(d) for d in dicts[1:]]
    inst = batch[0]["instances"]
    assert batch[0]["image"].shape == (3, 56, 80) and batch[0]["image"].dtype == torch.float32
    assert len(inst) <= 2 and inst.gt_masks.tensor.dtype == torch.bool  # crowd dropped
    assert set(inst.gt_classes.tolist()) <= {0, 2} and inst.gt_masks.nonempty().all()
    assert "annotations" not in batch[0]

    model = build_model(cfg).train()
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    check_gradients(model)


def test_instance_mapper_without_augmentation_keeps_the_masks(instance_dataset):
    mapper = InstanceDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                                   num_classes=3)
    d = DatasetCatalog.get(instance_dataset)[0]
    inst = mapper(d)["instances"]
    assert inst.gt_classes.tolist() == [0, 1]
    assert inst.gt_masks.tensor[0].sum() == 20 * 20 and inst.gt_masks.tensor[0, 8:28, 10:30].all()
    assert inst.gt_boxes.tensor.tolist() == [[10, 8, 30, 28], [50, 30, 80, 60]]
    test_d = InstanceDatasetMapper(make_cfg(), is_train=False)(d)
    assert set(test_d) == {"file_name", "image_id", "height", "width", "image"}


def test_panoptic_mapper_and_training(panoptic_dataset):
    cfg = make_cfg("DATASETS.TRAIN", (panoptic_dataset,), "INPUT.DATASET_MAPPER_NAME", "panoptic")
    dicts = DatasetCatalog.get(panoptic_dataset)
    plain = PanopticDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                                  num_classes=3)(dicts[1])
    inst = plain["instances"]
    assert inst.gt_classes.tolist() == [2, 1, 0]  # stuff, then things; the crowd one dropped
    assert inst.gt_masks.tensor[1, 5:50, 5:40].all() and inst.gt_masks.tensor[1].sum() == 35 * 45
    assert not inst.gt_masks.tensor[0, 2:12, 45:55].any()  # crowd region belongs to no target

    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, PanopticDatasetMapper)
    batch = [mapper(d) for d in dicts]
    assert "pan_seg_file_name" not in batch[0] and "segments_info" not in batch[0]
    model = build_model(cfg).train()
    total = sum(model(batch).values())
    assert torch.isfinite(total)
    total.backward()
    check_gradients(model)


def test_mapper_errors_name_the_file(instance_dataset, panoptic_dataset, tmp_path):
    d = dict(DatasetCatalog.get(instance_dataset)[2])
    small = dict(is_train=True, augmentations=[], image_format="RGB", num_classes=2)
    with pytest.raises(ValueError, match="im2.png.*category_id 2"):
        InstanceDatasetMapper(**small)(d)
    with pytest.raises(ValueError, match=r"im1.png.*category_id 2"):
        PanopticDatasetMapper(**small)(DatasetCatalog.get(panoptic_dataset)[1])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.png"):
        InstanceDatasetMapper(**small)(dict(d, file_name=str(bad)))


def test_training_needs_instances_or_sem_seg():
    model = build_model(make_cfg()).train()
    with pytest.raises(ValueError, match="'instances' or a 'sem_seg'"):
        model([{"image": torch.rand(3, H, W) * 255}])


# ---------------------------------------------------------------- evaluation with detectron2

def test_instance_evaluation(instance_dataset, tmp_path):
    cfg = make_cfg("DATASETS.TRAIN", (instance_dataset,), "DATASETS.TEST", (instance_dataset,),
                   "MODEL.MASK2FORMER.TEST.SEMANTIC_ON", False,
                   "MODEL.MASK2FORMER.TEST.INSTANCE_ON", True, "INPUT.MIN_SIZE_TEST", 48)
    model = build_model(cfg).eval()
    mapper = InstanceDatasetMapper(cfg, is_train=False)
    data = [[mapper(d)] for d in DatasetCatalog.get(instance_dataset)]
    assert data[0][0]["image"].shape == (3, 48, 72)  # resized for the model ...
    with torch.no_grad():
        out = model(data[0])[0]
    # ... and its masks brought back to the original size
    assert set(out) == {"instances"} and out["instances"].pred_masks.shape[1:] == (H, W)
    evaluator = COCOEvaluator(instance_dataset, distributed=False, output_dir=str(tmp_path))
    results = inference_on_dataset(model, data, evaluator)
    segm = results["segm"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(segm)
    assert all(math.isfinite(segm[k]) for k in ("AP", "AP50", "AP75", "APs"))  # objects are small


def test_instance_evaluation_of_a_perfect_prediction(instance_dataset, tmp_path):
    """Logits made from the ground truth, through instance_inference, score AP 100 in
    detectron2's COCOEvaluator: the output format is the one it expects."""
    gt_mapper = InstanceDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                                      num_classes=3)
    evaluator = COCOEvaluator(instance_dataset, tasks=("segm",), distributed=False,
                              output_dir=str(tmp_path))
    evaluator.reset()
    for d in DatasetCatalog.get(instance_dataset):
        gt = gt_mapper(d)["instances"]
        n = len(gt)
        cls = torch.full((n + 1, 4), -10.0)
        cls[torch.arange(n), gt.gt_classes] = 10.0
        cls[n, 3] = 10.0  # one unused query: no object
        masks = torch.cat([gt.gt_masks.tensor.float() * 40 - 20, torch.full((1, H, W), -20.0)])
        evaluator.process([d], [{"instances": instance_inference(cls, masks, 3, topk=100)}])
    segm = evaluator.evaluate()["segm"]
    assert segm["AP"] == pytest.approx(100.0) and segm["AP75"] == pytest.approx(100.0)


def test_panoptic_evaluation(panoptic_dataset, tmp_path):
    pytest.importorskip("panopticapi", reason="COCOPanopticEvaluator needs panopticapi")
    cfg = make_cfg("DATASETS.TRAIN", (panoptic_dataset,), "DATASETS.TEST", (panoptic_dataset,),
                   "MODEL.MASK2FORMER.TEST.INSTANCE_ON", True,
                   "MODEL.MASK2FORMER.TEST.PANOPTIC_ON", True,
                   # an untrained model: let low scores through so that segments come out
                   "MODEL.MASK2FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.0,
                   "MODEL.MASK2FORMER.TEST.OVERLAP_THRESHOLD", 0.0)
    model = build_model(cfg).eval()
    mapper = PanopticDatasetMapper(cfg, is_train=False)
    data = [[mapper(d)] for d in DatasetCatalog.get(panoptic_dataset)]
    with torch.no_grad():
        out = model(data[0])[0]
    assert set(out) == {"sem_seg", "instances", "panoptic_seg"}
    assert set(out["instances"].pred_classes.tolist()) <= {0, 1}  # things only
    seg, info = out["panoptic_seg"]
    assert seg.shape == (H, W) and len(info) > 0
    assert sorted(s["id"] for s in info) == sorted(set(seg.unique().tolist()) - {0})
    evaluator = InProcessPanopticEvaluator(panoptic_dataset, output_dir=str(tmp_path))
    res = inference_on_dataset(model, data, evaluator)["panoptic_seg"]
    for k in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert math.isfinite(res[k]), (k, res)


def test_panoptic_evaluation_of_a_perfect_prediction(panoptic_dataset, tmp_path):
    pytest.importorskip("panopticapi", reason="COCOPanopticEvaluator needs panopticapi")
    gt_mapper = PanopticDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                                      num_classes=3)
    evaluator = InProcessPanopticEvaluator(panoptic_dataset, output_dir=str(tmp_path))
    evaluator.reset()
    for d in DatasetCatalog.get(panoptic_dataset):
        gt = gt_mapper(d)["instances"]
        cls = torch.full((len(gt), 4), -10.0)
        cls[torch.arange(len(gt)), gt.gt_classes] = 10.0
        masks = gt.gt_masks.tensor.float() * 40 - 20
        pan = panoptic_inference(cls, masks, 3, 0.8, 0.8, thing_ids=[0, 1])
        evaluator.process([d], [{"panoptic_seg": pan}])
    res = evaluator.evaluate()["panoptic_seg"]
    assert res["PQ"] == pytest.approx(100.0) and res["PQ_st"] == pytest.approx(100.0)


def test_panoptic_inference_needs_thing_ids():
    model = build_model(make_cfg("MODEL.MASK2FORMER.TEST.PANOPTIC_ON", True)).eval()
    model.metadata = MetadataCatalog.get(f"rein_test_unregistered_{uuid.uuid4().hex[:8]}")
    with torch.no_grad(), pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        model([{"image": torch.rand(3, H, W) * 255}])


def test_instances_from_the_model_are_resized_to_the_requested_size():
    model = build_model(make_cfg("MODEL.MASK2FORMER.TEST.INSTANCE_ON", True,
                                 "MODEL.MASK2FORMER.TEST.DETECTIONS_PER_IMAGE", 7)).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 50, 70) * 255, "height": 100, "width": 140}])[0]
    assert out["sem_seg"].shape == (3, 100, 140)
    inst = out["instances"]
    assert isinstance(inst, Instances) and len(inst) == 7 and inst.image_size == (100, 140)
    assert inst.pred_masks.shape == (7, 100, 140) and inst.pred_masks.dtype == torch.bool
