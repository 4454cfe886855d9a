"""ReinTrainer follows detectron2's trainer hooks: evaluators chosen by evaluator_type from one
table, test() honours its evaluators argument, TTA through test_with_TTA, and the sampler and
filtering keys of DATALOADER."""
import math
import uuid

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluator,
                                   DatasetEvaluators, SemSegEvaluator)
from detectron2.modeling import build_model

from rein_d2.data.samplers import ResumableRepeatFactorSampler
from rein_d2.engine import ReinTrainer
from rein_d2.evaluation import EVALUATORS, InProcessPanopticEvaluator, ThingCOCOEvaluator, build_evaluator
from test_instance_panoptic import instance_dataset, make_cfg, panoptic_dataset  # noqa: F401
from test_training import dataset, make_cfg as semantic_cfg  # noqa: F401


class Recorder(DatasetEvaluator):
    def __init__(self):
        self.seen = 0

    def process(self, inputs, outputs):
        self.seen += len(inputs)

    def evaluate(self):
        return {"recorded": {"images": self.seen}}


def test_evaluators_come_from_one_table_by_evaluator_type(instance_dataset, panoptic_dataset, dataset, tmp_path):  # noqa: F811
    cfg = make_cfg("MODEL.MASK2FORMER.TEST.INSTANCE_ON", True, "MODEL.MASK2FORMER.TEST.PANOPTIC_ON", True)
    assert isinstance(build_evaluator(cfg, dataset, str(tmp_path)), SemSegEvaluator)
    assert isinstance(build_evaluator(cfg, instance_dataset, str(tmp_path)), COCOEvaluator)
    # PQ; and mask AP of the model's instances where an instances json exists to score them
    assert isinstance(build_evaluator(cfg, panoptic_dataset, str(tmp_path)), COCOPanopticEvaluator)
    with_json = f"pan_{uuid.uuid4().hex[:6]}"
    meta = {k: v for k, v in MetadataCatalog.get(panoptic_dataset).as_dict().items()
            if k not in ("name", "json_file")}
    # (its things, json categories 1 and 3, are the panoptic model's classes 0 and 1)
    meta["thing_dataset_id_to_contiguous_id"] = {1: 0, 3: 1}
    DatasetCatalog.register(with_json, lambda: DatasetCatalog.get(panoptic_dataset))
    MetadataCatalog.get(with_json).set(**meta, json_file=MetadataCatalog.get(instance_dataset).json_file)
    both = build_evaluator(cfg, with_json, str(tmp_path))
    assert isinstance(both, DatasetEvaluators)
    assert [type(e) for e in both._evaluators] == [InProcessPanopticEvaluator, ThingCOCOEvaluator]
    assert {"sem_seg", "coco", "coco_panoptic_seg", "cityscapes_panoptic_seg", "cityscapes_instance",
            "cityscapes_sem_seg"} <= set(EVALUATORS)
    odd = f"odd_{uuid.uuid4().hex[:6]}"
    MetadataCatalog.get(odd).set(evaluator_type="lvis")
    with pytest.raises(NotImplementedError, match=r"'odd_.*' \(evaluator_type 'lvis'\).*coco_panoptic_seg"):
        build_evaluator(cfg, odd)


def test_a_panoptic_model_is_scored_by_pq_not_only_miou(panoptic_dataset, tmp_path):  # noqa: F811
    pytest.importorskip("panopticapi", reason="COCOPanopticEvaluator needs panopticapi")
    cfg = make_cfg("DATASETS.TRAIN", (panoptic_dataset,), "DATASETS.TEST", (panoptic_dataset,),
                   "OUTPUT_DIR", str(tmp_path),
                   "INPUT.DATASET_MAPPER_NAME", "panoptic", "DATALOADER.NUM_WORKERS", 0,
                   "MODEL.MASK2FORMER.TEST.INSTANCE_ON", True, "MODEL.MASK2FORMER.TEST.PANOPTIC_ON", True,
                   "MODEL.MASK2FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.0,
                   "MODEL.MASK2FORMER.TEST.OVERLAP_THRESHOLD", 0.0)
    model = build_model(cfg)
    results = ReinTrainer.test(cfg, model)  # the domain-generalization evaluation: PQ per target
    assert {"PQ", "PQ_th", "PQ_st", "SQ", "RQ"} <= set(results[panoptic_dataset])
    assert math.isfinite(results[panoptic_dataset]["PQ"])
    assert (tmp_path / "inference" / "dg_summary.json").is_file()


def test_test_honours_the_evaluators_it_is_given(dataset, tmp_path):  # noqa: F811
    cfg = semantic_cfg(dataset, tmp_path, "DATASETS.TEST", (dataset,))
    model = build_model(cfg)
    recorder = Recorder()
    results = ReinTrainer.test(cfg, model, evaluators=[recorder])
    assert results == {"recorded": {"images": len(DatasetCatalog.get(dataset))}}


def test_tta_evaluation_runs_the_augmented_model(dataset, tmp_path, monkeypatch):  # noqa: F811
    cfg = semantic_cfg(dataset, tmp_path, "DATASETS.TEST", (dataset,), "TEST.AUG.MIN_SIZES", (48, 64),
                       "TEST.AUG.MAX_SIZE", 128, "TEST.AUG.FLIP", True)
    model = build_model(cfg)
    calls = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    plain = ReinTrainer.test(cfg, model)
    n_plain = len(calls)
    tta = ReinTrainer.test_with_TTA(cfg, model)
    assert set(tta) == {k + "_TTA" for k in plain} and "mIoU" in tta[f"{dataset}_TTA"]
    assert len(calls) - n_plain == 4 * n_plain  # 2 sizes x (plain, flipped) per image


def test_repeat_factor_sampler_and_empty_image_filter_follow_detectron2_keys(tmp_path):
    """DATALOADER.SAMPLER_TRAIN RepeatFactorTrainingSampler repeats images of rare categories;
    FILTER_EMPTY_ANNOTATIONS drops the image without objects. Semantic data is refused for RFS."""
    from detectron2.structures import BoxMode

    from rein_d2.data.samplers import build_resumable_sampler

    def image(cats):
        return {"file_name": "x.png", "height": 8, "width": 8, "annotations": [
            {"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": c, "iscrowd": 0}
            for c in cats]}
    dicts = [image([0])] * 8 + [image([1])] + [image([])]
    name = f"rfs_{uuid.uuid4().hex[:6]}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["common", "rare"])
    cfg = make_cfg("DATASETS.TRAIN", (name,), "INPUT.DATASET_MAPPER_NAME", "instance",
                   "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler",
                   "DATALOADER.REPEAT_THRESHOLD", 0.5, "DATALOADER.NUM_WORKERS", 0, "SEED", 3)
    loader = ReinTrainer.build_train_loader(cfg)
    sampler = loader.rein_sampler
    assert isinstance(sampler, ResumableRepeatFactorSampler) and sampler.dataset_size == 9  # empty one filtered
    # the rare image (index 8) has repeat factor sqrt(0.5 / (1/9)) = 2.12: drawn about twice per epoch
    factors = sampler._int_part + sampler._frac_part
    assert factors[8] == pytest.approx(math.sqrt(0.5 * 9)) and torch.all(factors[:8] == 1)
    with pytest.raises(ValueError, match="no 'annotations'.*use TrainingSampler"):
        build_resumable_sampler(cfg, [{"file_name": "a.png", "sem_seg_file_name": "b.png"}])


def test_an_empty_training_split_names_itself_and_where_it_looked(tmp_path):
    name = f"empty_{uuid.uuid4().hex[:6]}"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(image_root=str(tmp_path / "images"))
    cfg = make_cfg("DATASETS.TRAIN", (name,))
    with pytest.raises(ValueError, match=f"'{name}' has no images .*{tmp_path / 'images'}"):
        ReinTrainer.build_train_loader(cfg)
