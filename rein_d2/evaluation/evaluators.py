"""detectron2's evaluators and test loaders chosen by a dataset's ``evaluator_type``, as
DefaultTrainer.build_evaluator / build_test_loader expect. One table, one entry per kind."""
import contextlib
import logging
import os
import tempfile
from typing import Callable, Dict, List, Optional

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.catalog import Metadata
from detectron2.evaluation import (CityscapesInstanceEvaluator, CityscapesSemSegEvaluator,
                                   COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluator,
                                   DatasetEvaluators)

from tabulate import tabulate

from ..utils.files import write_csv_atomic
from .semantic import semantic_evaluator, semantic_test_loader

__all__ = ["EVALUATORS", "INSTANCE_KINDS", "PANOPTIC_KINDS", "CityscapesAPEvaluator",
           "InProcessPanopticEvaluator", "ThingCOCOEvaluator", "build_evaluator", "build_test_loader"]

logger = logging.getLogger(__name__)

# evaluator_types of panoptic datasets (records with pan_seg_file_name, segments_info) and of
# instance datasets (records with annotations): the DG evaluation scores them with EVALUATORS.
PANOPTIC_KINDS = ("coco_panoptic_seg", "cityscapes_panoptic_seg")
INSTANCE_KINDS = ("coco", "cityscapes_instance")


class InProcessPanopticEvaluator(COCOPanopticEvaluator):
    """COCOPanopticEvaluator whose PQ is computed in this process, and which keeps the per-class
    PQ / SQ / RQ that panopticapi computes and detectron2 drops: in the results ("PQ-<class>",
    "SQ-<class>", "RQ-<class>", as SemSegEvaluator's "IoU-<class>") and, with an output
    folder, in pq_per_class.csv there. panopticapi forks a Pool from the evaluating process,
    which runs torch's threads: a forked worker can then deadlock on a lock some thread held
    (seen here at the pool's teardown). Its one-process path sums the same per-image
    statistics, so PQ is unchanged."""

    def evaluate(self):
        with self._single_process_pq() as computed:
            results = super().evaluate()
        if results is None or "stat" not in computed:  # not the main process
            return results
        stat, categories = computed["stat"], computed["categories"]
        per_class = stat.pq_average(categories, isthing=None)[1]  # as pq_compute's "per_class"
        # classes neither in the ground truth nor predicted are left out (panopticapi gives 0)
        rows = [(categories[cat]["name"], *(100 * v[k] for k in ("pq", "sq", "rq")))
                for cat, v in sorted(per_class.items())
                if stat.pq_per_cat[cat].tp + stat.pq_per_cat[cat].fp + stat.pq_per_cat[cat].fn]
        for name, pq, sq, rq in rows:
            results["panoptic_seg"].update({f"PQ-{name}": pq, f"SQ-{name}": sq, f"RQ-{name}": rq})
        if self._output_dir:
            write_csv_atomic(os.path.join(self._output_dir, "pq_per_class.csv"), [["class", "PQ", "SQ", "RQ"]] + [
                [name] + [f"{v:.4f}" for v in values] for name, *values in rows])
        logger.info("Per-class panoptic quality:\n%s", tabulate(
            rows, headers=["class", "PQ", "SQ", "RQ"], tablefmt="pipe", floatfmt=".2f"))
        return results

    @staticmethod
    @contextlib.contextmanager
    def _single_process_pq():
        """Yields a dict that receives pq_compute's statistics ("stat": the PQStat, with its
        per-class counts) and its categories ("categories": id -> the json's category)."""
        computed = {}
        try:
            import panopticapi.evaluation as pq
        except ImportError:  # detectron2 names the missing package itself
            yield computed
            return
        multi = pq.pq_compute_multi_core

        def single_core(annotations, gt, pred, categories):
            computed["stat"] = pq.pq_compute_single_core(0, annotations, gt, pred, categories)
            computed["categories"] = categories
            return computed["stat"]

        pq.pq_compute_multi_core = single_core
        try:
            yield computed
        finally:
            pq.pq_compute_multi_core = multi


class CityscapesAPEvaluator(CityscapesInstanceEvaluator):
    """cityscapesscripts' instance AP (the Cityscapes benchmark's) under its own name:
    {"cityscapes_segm": {"AP", "AP50"}}, so that a summary never averages it with COCO mask AP
    ("segm"), another definition (the two differ on the same predictions)."""

    def evaluate(self):
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cityscapes_eval

        # cityscapesscripts writes "matches.json" into the working directory: into a temporary one
        write = cityscapes_eval.writeDict2JSON
        with tempfile.TemporaryDirectory(prefix="cityscapes_matches") as elsewhere:
            cityscapes_eval.writeDict2JSON = lambda data, path: write(data, os.path.join(elsewhere, path))
            try:
                results = super().evaluate()
            finally:
                cityscapes_eval.writeDict2JSON = write
        return None if results is None else {"cityscapes_segm": results["segm"]}


class ThingCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator (mask AP) of a panoptic dataset's things against its instances json
    (metadata json_file). The model's classes are the panoptic contiguous ids, things and stuff
    together (the 19 Cityscapes classes: things are 11..18), which COCOEvaluator refuses: it
    wants the things at 0..N-1 and one name per json category. Each predicted thing is
    renumbered to its category's place among the json's categories; predictions of other
    classes (stuff) are dropped, as they could match no category of the json anyway."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        super().__init__(dataset_name, tasks=("segm",), output_dir=output_dir)
        meta = self._metadata
        json_ids = sorted(self._coco_api.getCatIds())
        thing_ids = meta.thing_dataset_id_to_contiguous_id  # json category id -> model class
        missing = sorted(set(thing_ids) - set(json_ids))
        if missing:
            raise ValueError(
                f"{dataset_name}: thing category ids {missing} of its metadata's "
                f"thing_dataset_id_to_contiguous_id are no category of its instances json "
                f"{meta.json_file} (categories {json_ids}): the json must use the panoptic "
                "json's category ids; rerun the dataset's preparation script")
        place = {cat: i for i, cat in enumerate(json_ids)}
        self._class_to_place = {c: place[cat] for cat, c in thing_ids.items()}
        # what COCOEvaluator reads from here on: contiguous things and one name per category
        self._metadata = Metadata(name=meta.name, json_file=meta.json_file,
                                  thing_classes=[self._coco_api.cats[c]["name"] for c in json_ids],
                                  thing_dataset_id_to_contiguous_id=place)

    def process(self, inputs, outputs):
        super().process(inputs, [self._things(o) for o in outputs])

    def _things(self, output: Dict) -> Dict:
        if "instances" not in output:
            return output
        instances = output["instances"].to("cpu")
        classes = instances.pred_classes.tolist()
        keep = [i for i, c in enumerate(classes) if c in self._class_to_place]
        instances = instances[torch.tensor(keep, dtype=torch.long)]
        instances.pred_classes = torch.tensor([self._class_to_place[classes[i]] for i in keep],
                                              dtype=torch.long)
        return dict(output, instances=instances)


def _panoptic(cfg, name: str, output_dir: Optional[str]) -> List[DatasetEvaluator]:
    """What the model's MODEL.MASK2FORMER.TEST flags produce, as Mask2Former scores it: PQ
    (PANOPTIC_ON); mask AP of its instances (INSTANCE_ON) against the instances json
    (metadata json_file) or, for Cityscapes, by cityscapesscripts (its own columns,
    cityscapes_AP); mIoU (SEMANTIC_ON) where the
    records carry a train-id label (sem_seg_file_name)."""
    test = cfg.MODEL.MASK2FORMER.TEST
    meta = MetadataCatalog.get(name)
    evaluators = []
    if test.PANOPTIC_ON:
        evaluators.append(InProcessPanopticEvaluator(name, output_dir))
    if test.INSTANCE_ON:
        if meta.get("json_file", None):
            evaluators.append(ThingCOCOEvaluator(name, output_dir))
        elif meta.get("evaluator_type", None) == "cityscapes_panoptic_seg":
            evaluators.append(CityscapesAPEvaluator(name))
        else:
            logger.warning("%s: no instances json (metadata json_file) to score the model's "
                           "instances against: no mask AP", name)
    if test.SEMANTIC_ON:
        if all("sem_seg_file_name" in d for d in DatasetCatalog.get(name)[:1]):
            evaluators.append(semantic_evaluator(name, output_dir))
        else:
            logger.info("%s: records without sem_seg_file_name: no mIoU", name)
    if not evaluators:
        raise ValueError(f"panoptic dataset '{name}': the model outputs nothing it can score; set "
                         "MODEL.MASK2FORMER.TEST.PANOPTIC_ON (PQ), INSTANCE_ON (mask AP) or "
                         "SEMANTIC_ON (mIoU, with sem_seg_file_name in the records)")
    return evaluators


# evaluator_type -> (cfg, dataset name, output dir) -> evaluators
EVALUATORS: Dict[str, Callable[..., List[DatasetEvaluator]]] = {
    "sem_seg": lambda cfg, name, out: [semantic_evaluator(name, out)],
    "coco": lambda cfg, name, out: [COCOEvaluator(name, output_dir=out)],
    "coco_panoptic_seg": _panoptic,
    "cityscapes_panoptic_seg": _panoptic,
    "cityscapes_instance": lambda cfg, name, out: [CityscapesAPEvaluator(name)],
    "cityscapes_sem_seg": lambda cfg, name, out: [CityscapesSemSegEvaluator(name)],
}


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluator:
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if kind not in EVALUATORS:
        raise NotImplementedError(
            f"no evaluator for dataset '{dataset_name}' (evaluator_type {kind!r}); rein_d2 "
            f"evaluates {', '.join(sorted(EVALUATORS))}: set evaluator_type in its metadata, or "
            f"pass evaluators to ReinTrainer.test")
    evaluators = EVALUATORS[kind](cfg, dataset_name, output_dir)
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def build_test_loader(cfg, dataset_name: str):
    """Semantic datasets at their evaluation size (as the DG evaluation scores them); others
    through the test mapper of INPUT.DATASET_MAPPER_NAME."""
    if MetadataCatalog.get(dataset_name).get("evaluator_type", None) == "sem_seg":
        return semantic_test_loader(cfg, dataset_name)
    from ..data import build_test_mapper

    return build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))
