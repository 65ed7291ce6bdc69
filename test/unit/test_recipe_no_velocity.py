"""Recipe(inputs="no_velocity"): the diff_drive network reads the observation without the robot's
own measured (v, omega) (a cloned network fed its last command learns to repeat it); the model
file carries the input map, so the node and `lnn-control evaluate` feed it the full observation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnn_control.config import config_path, load_observation_config
from lnn_control.learn import recipe as R
from lnn_control.runtime.model_file import load_stepper

torch.set_num_threads(1)
DD = config_path("diff_drive")


def test_no_velocity_drops_v_and_omega_and_the_model_file_deploys_it(tmp_path) -> None:
    eps = R.expert_episodes("diff_drive", DD, range(3), max_time=1.0)
    rec = R.Recipe(units=8, steps=4, window=16, batch=4, seed=0, inputs="no_velocity")
    res = R.train(rec, DD, eps[:2], out=tmp_path / "m.npz", progress=False, validation=eps[2:])
    names = res.model.input_names
    assert "v" not in names and "omega" not in names and len(names) == eps[0].obs.shape[1] - 2
    stepper = load_stepper(tmp_path / "m.npz")
    assert stepper.n_inputs == eps[0].obs.shape[1]  # the deployed step takes the whole observation
    o = eps[2].obs[5].copy()
    y = stepper.step(o, 0.02)
    stepper.reset()
    o2 = o.copy()
    o2[[2, 3]] += (0.4, -1.0)  # the measured (v, omega) change nothing
    np.testing.assert_array_equal(stepper.step(o2, 0.02), y)
    # and it is the trained network on the observation without them
    net = res.model.runtime()
    np.testing.assert_allclose(net.step(np.delete(o, [2, 3]), 0.02), y, atol=1e-5)


def test_no_velocity_needs_velocity_entries() -> None:
    with pytest.raises(ValueError, match="no_velocity"):
        R.structure_for(R.Recipe(inputs="no_velocity"), "arm", load_observation_config(config_path("arm")))
