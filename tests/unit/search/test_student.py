"""``searched_student`` rebuilds exactly what the search exported, from a topology file."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from search_helpers import DOREFA, SHAPE, random_paths

from archnet.errors import ConfigError
from archnet.metrics.complexity import measure
from archnet.search.build import build_supernet
from archnet.search.student import searched_student


def test_topology_file_round_trip_with_supernet_weights(teacher, tmp_path):
    net = build_supernet(teacher, DOREFA, SHAPE, divisor=4)
    net.set_quantize(True)
    x = torch.randn(4, *SHAPE)
    for i, path in enumerate(random_paths(net.space.sizes, 4, seed=11)):
        exported = net.export(path).eval()
        doc = {"student": {"divisor": 4}, **net.space.to_topology(path)}
        topo_file, init = tmp_path / f"topology{i}.yaml", tmp_path / f"init{i}.pt"
        topo_file.write_text(OmegaConf.to_yaml(OmegaConf.create(doc)))
        torch.save(exported.state_dict(), init)
        student = searched_student(teacher, DOREFA, SHAPE, str(topo_file), init=str(init)).eval()
        assert student.tap_names == teacher.tap_names
        assert measure(student, SHAPE).macs == measure(exported, SHAPE).macs
        with torch.no_grad():
            assert torch.allclose(student(x), exported(x), atol=1e-5, rtol=0)


def test_inline_list_and_option_override(teacher):
    blocks = [{"n_units": 1, "width": 0.5, "shortcut": False}] * 3
    small = searched_student(teacher, DOREFA, SHAPE, blocks, divisor=8)
    wide = searched_student(teacher, DOREFA, SHAPE, [{**b, "width": 1.0} for b in blocks])
    assert measure(small, SHAPE).macs < measure(wide, SHAPE).macs


@pytest.mark.parametrize("topology", [
    None, "missing.yaml", {"blocks": {"layer9.0": {"n_units": 1, "width": 1.0, "shortcut": True}}},
    [{"n_units": 1, "width": 1.0}] * 3, [{"n_units": 1, "width": 1.0, "shortcut": True}] * 2])
def test_bad_topology_is_a_config_error(teacher, topology):
    with pytest.raises(ConfigError):
        searched_student(teacher, DOREFA, SHAPE, topology)


def test_rfa_adapters_follow_the_schedule_taps(teacher):
    """A thinned searched student's inner taps differ from the teacher's: with
    ``distill.adapters.taps: null`` the adapters go on the schedule's block outputs only
    (retrain.sh of a Tiny-ImageNet search failed here), and without ``schedule.taps`` the
    shape mismatch is still reported."""
    from archnet.distill.build import build_adapters

    student = searched_student(teacher, DOREFA, SHAPE, [{"n_units": 2, "width": 0.5, "shortcut": True}] * 3,
                               divisor=4)
    outs = [f"{n}.out" for n in teacher.block_names]
    rfa = {"_target_": "archnet.distill.adapters.rfa_adapters", "squeeze": 24, "taps": None}
    cfg = OmegaConf.create({"distill": {"adapters": rfa}, "schedule": {"taps": ["stem", *outs]}})
    assert sorted(build_adapters(cfg, teacher, student, SHAPE)) == sorted(outs)
    with pytest.raises(ValueError, match="equal C x H x W"):
        build_adapters(OmegaConf.create({"distill": {"adapters": rfa}, "schedule": {}}), teacher, student, SHAPE)
