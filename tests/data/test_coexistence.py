"""knet_d2 next to other Detectron2 projects in one process (dataset names).

D2's ``DatasetCatalog.register`` asserts when a name is registered twice, so two projects that
register the same name cannot be imported together. The stub below does what importing
Mask2Former does to D2's catalogs (it registers these names with loaders and metadata); it is
run before and after ``import knet_d2`` in a fresh interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.paths import REPO_ROOT

# What `import mask2former` registers (its data/datasets/register_*.py), as plain names.
MASK2FORMER_STUB = textwrap.dedent(
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    def register_mask2former_names():
        names = [
            "coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg",
            "ade20k_panoptic_train", "ade20k_panoptic_val",
            "ade20k_instance_train", "ade20k_instance_val",
            "ade20k_full_sem_seg_train", "ade20k_full_sem_seg_val",
        ]
        for name in names:
            DatasetCatalog.register(name, lambda: [])
            MetadataCatalog.get(name).set(evaluator_type="coco_panoptic_seg", ignore_label=255)
        return names
    """
)

ORDERS = {
    "mask2former_first": "m2f = register_mask2former_names()\nimport knet_d2\n",
    "knet_d2_first": "import knet_d2\nm2f = register_mask2former_names()\n",
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_import_with_mask2former_names(order, tmp_path):
    code = MASK2FORMER_STUB + textwrap.dedent(
        """
        import detectron2.data.datasets  # D2's builtin names
        before = set(DatasetCatalog.list())
        """
    ) + ORDERS[order] + textwrap.dedent(
        """
        added = set(DatasetCatalog.list()) - before - set(m2f)
        foreign = sorted(n for n in added if not n.startswith("knet_"))
        assert not foreign, f"knet_d2 registered names without the knet_ prefix: {foreign}"
        assert "knet_coco_2017_val_panoptic_with_sem_seg" in added
        # the other project's names still resolve to its own registration
        assert DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg") == []
        meta = MetadataCatalog.get("knet_coco_2017_val_panoptic_with_sem_seg")
        assert len(meta.stuff_classes) == 133
        print("OK", len(added))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**os.environ, "DETECTRON2_DATASETS": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout
