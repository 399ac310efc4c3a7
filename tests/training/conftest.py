import pytest

from m2f_hf.data.synthetic import save_synthetic_dataset
from m2f_hf.testing import tiny_config


@pytest.fixture(scope="session")
def panoptic_dir(tmp_path_factory):
    """A small synthetic COCO-panoptic dataset on disk (save_to_disk + categories.json)."""
    return save_synthetic_dataset(
        str(tmp_path_factory.mktemp("data") / "shapes-panoptic"), "panoptic", num_train=16, num_validation=4, seed=0
    )


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    tiny_config(num_labels=2).to_json_file(str(path))
    return str(path)
