"""RK4 trajectories against closed-form motion, and trajectory files."""
import math

import numpy as np
import pytest
import torch

from kinfield.motion import integrate, kinematics_along, parse_times, read_points, write_trajectories

V0 = torch.tensor([0.5, -0.2, 1.5], dtype=torch.float64)
G = torch.tensor([0.0, 0.0, -4.0], dtype=torch.float64)


def test_rk4_recovers_a_projectile_forward_and_backward():
    # Eulerian field of a uniformly accelerating body: v(x, t) = v0 + g t (independent of x)
    def vel(x, t):
        return V0 + G * t[:, None]

    x0 = torch.tensor([[0.1, 0.2, 0.3], [-0.5, 0.0, 1.0]], dtype=torch.float64)
    t0 = 0.4
    times = torch.tensor([0.0, 0.1, 0.4, 0.75, 1.0], dtype=torch.float64)
    pos = integrate(vel, x0, t0, times, max_step=0.1)
    for i, s in enumerate(times.tolist()):
        dt = s - t0
        # x(s) = x0 + v(t0) dt + g dt^2 / 2
        want = x0 + (V0 + G * t0) * dt + 0.5 * G * dt * dt
        torch.testing.assert_close(pos[i], want, atol=1e-10, rtol=0)


def test_rk4_recovers_a_circular_path():
    w = 2 * math.pi  # one turn per unit time about z

    def vel(x, t):
        return torch.stack([-w * x[:, 1], w * x[:, 0], torch.zeros_like(x[:, 0])], dim=-1)

    x0 = torch.tensor([[1.0, 0.0, 0.2]], dtype=torch.float64)
    times = torch.linspace(0, 1, 9, dtype=torch.float64)
    pos = integrate(vel, x0, 0.0, times, max_step=0.01)
    ang = w * times
    want = torch.stack([torch.cos(ang), torch.sin(ang), torch.full_like(ang, 0.2)], dim=-1)[:, None]
    torch.testing.assert_close(pos, want, atol=1e-6, rtol=0)
    # radius preserved, and coarse steps are visibly worse (the integrator is really stepping)
    coarse = integrate(vel, x0, 0.0, times, max_step=0.25)
    assert (coarse - want).abs().max() > 1e-4


def test_no_rk4_step_is_longer_than_max_step():
    """A span of 0.15 with max_step 0.1 takes two steps of 0.075 (8 field reads), one of 0.1 one step; the span
    back to an earlier time counts alike."""
    steps = []

    def vel(x, t):
        steps.append(float(t[0]))
        return torch.ones_like(x)

    x0 = torch.zeros(1, 3, dtype=torch.float64)
    pos = integrate(vel, x0, 0.5, torch.tensor([0.65, 0.35, 0.6], dtype=torch.float64), max_step=0.1)
    # forward 0.5 -> 0.6 (one step), 0.6 -> 0.65 (one); backward 0.5 -> 0.35 (two)
    assert len(steps) == 4 * 4
    torch.testing.assert_close(pos[:, 0, 0], torch.tensor([0.15, -0.15, 0.1], dtype=torch.float64))
    assert sorted(set(round(s, 6) for s in steps)) == [0.35, 0.3875, 0.425, 0.4625, 0.5, 0.55, 0.6, 0.625, 0.65]


def test_kinematics_along_tracks_shapes():
    pos = torch.rand(4, 5, 3)
    times = torch.linspace(0, 1, 4)

    def kin(x, t):
        return {"velocity": x * 0 + t[:, None], "acceleration": x, "jerk": -x}

    out = kinematics_along(kin, pos, times)
    assert out["velocity"].shape == (4, 5, 3)
    torch.testing.assert_close(out["velocity"][2, :, 0], torch.full((5,), float(times[2])))
    torch.testing.assert_close(out["jerk"], -pos)
    calls = []

    def counted(x, t):
        calls.append(x.shape[0])
        return kin(x, t)

    chunked = kinematics_along(counted, pos, times, chunk=6)  # bounded memory: 20 points in calls of at most 6
    assert calls == [6, 6, 6, 2]
    for k in out:
        torch.testing.assert_close(chunked[k], out[k], rtol=0, atol=0)


def test_points_and_times_parsing(tmp_path):
    p = tmp_path / "pts.txt"
    p.write_text("0 0 0\n1 2 3\n")
    assert read_points(p).shape == (2, 3)
    np.save(tmp_path / "pts.npy", np.ones((4, 3)))
    assert read_points(tmp_path / "pts.npy").shape == (4, 3)
    (tmp_path / "bad.txt").write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match="N x 3"):
        read_points(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_points(tmp_path / "missing.txt")
    assert parse_times("5", None).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_times("1", None, query_time=0.3).tolist() == [0.3]  # one time: the query time, not t = 0
    assert parse_times("0.1,0.3", None).tolist() == [0.1, 0.3]
    with pytest.raises(ValueError):
        parse_times("0.1,1.5", None)


@pytest.mark.parametrize("fmt", ["npz", "ply", "json", "csv"])
def test_write_trajectories_formats(tmp_path, fmt):
    T, N = 3, 2
    traj = {"times": np.linspace(0, 1, T).astype(np.float32), "query_points": np.zeros((N, 3), np.float32),
            "query_time": np.float32(0.0)}
    for k in ("positions", "velocity", "acceleration", "jerk"):
        traj[k] = np.random.rand(T, N, 3).astype(np.float32)
    path = write_trajectories(traj, tmp_path / f"tracks.{fmt}")
    assert path.stat().st_size > 0
    if fmt == "npz":
        back = np.load(path)
        np.testing.assert_array_equal(back["positions"], traj["positions"])
    if fmt == "csv":
        assert len(path.read_text().strip().splitlines()) == 1 + T * N
        for i, k in enumerate(("positions", "velocity", "acceleration", "jerk")):
            traj[k] = np.full((T, N, 3), float(i + 1), np.float32)
        rows = write_trajectories(traj, tmp_path / "ordered.csv").read_text().splitlines()
        assert rows[1] == "0.000000,0,1,1,1,2,2,2,3,3,3,4,4,4"  # time, point, then x y z of each order in turn
        assert rows[0] == "time,track,x,y,z,vx,vy,vz,ax,ay,az,jx,jy,jz"
        traj["velocity"] = np.full((T, N, 3), -0.0, np.float32)  # e.g. a still point's velocity times -tau
        for ext in ("csv", "json"):
            text = write_trajectories(traj, tmp_path / f"zeros.{ext}").read_text()
            assert "-0," not in text and "-0.0" not in text, ext
    if fmt == "ply":
        assert f"element vertex {T * N}" in path.read_text()


def test_the_trajectory_file_is_named_as_written_and_its_format_checked_first(tmp_path):
    from kinfield.motion.export import trajectory_target

    assert trajectory_target(tmp_path / "tracks") == (tmp_path / "tracks.npz", "npz")  # numpy appends .npz
    assert trajectory_target(tmp_path / "x.json", "npz") == (tmp_path / "x.json.npz", "npz")
    assert trajectory_target(tmp_path / "x.PLY") == (tmp_path / "x.PLY", "ply")
    assert trajectory_target(tmp_path / "x.csv", "ply") == (tmp_path / "x.csv.ply", "ply")  # no CSV file holding PLY
    assert trajectory_target(tmp_path / "x.data", "ply") == (tmp_path / "x.data", "ply")
    with pytest.raises(ValueError, match=r"'txt'.*--format"):
        trajectory_target(tmp_path / "tracks.txt")
    traj = {"times": np.zeros(1, np.float32), "positions": np.zeros((1, 1, 3), np.float32)}
    assert write_trajectories(traj, tmp_path / "tracks").is_file()


class _UniformMotionModel:
    """Stands in for a SceneModel: a kinematic field of uniform velocity ``v`` everywhere."""

    def __init__(self, v):
        self.v = torch.as_tensor(v, dtype=torch.float32)
        self.aabb = torch.tensor([-2.0, -2.0, -2.0, 2.0, 2.0, 2.0])
        self.kinematic = self

    order, frame_dt = 3, 0.05

    def set_active_orders(self, k):
        pass

    def kinematics_at(self, x, t):
        zero = torch.zeros_like(x)
        return {"velocity": self.v.expand_as(x), "acceleration": zero, "jerk": zero}


def test_ground_truth_scores_split_by_object_and_name_the_no_motion_baseline(tmp_path):
    from kinfield.motion import score_against_ground_truth

    v0 = np.array([0.6, -0.3, 0.2], np.float32)
    times = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    q = np.array([[0.0, 0.0, 0.0], [0.5, 0.1, -0.2], [-0.4, 0.3, 0.1]], np.float32)
    pos = q[None] + (times[:, None, None] - 0.5) * v0
    pos[:, 2] = q[2]  # object "still" does not move
    vel = np.broadcast_to(v0, pos.shape).copy()
    vel[:, 2] = 0.0
    np.savez(tmp_path / "motion_gt.npz", times=times, query_time=np.float32(0.5), query_points=q, positions=pos,
             velocity=vel, acceleration=np.zeros_like(pos), jerk=np.zeros_like(pos),
             object_id=np.array([0, 0, 1]), object_names=np.array(["mover", "still"]))
    curves = {}
    exact = score_against_ground_truth(_UniformMotionModel(v0), tmp_path / "motion_gt.npz", curves=curves)
    assert sorted(curves) == ["epe_all", "epe_mover", "epe_still", "time", "zero_motion_all", "zero_motion_mover",
                              "zero_motion_still"]
    np.testing.assert_allclose(curves["time"], times)
    np.testing.assert_allclose(curves["epe_still"], np.abs(times - 0.5) * np.linalg.norm(v0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curves["zero_motion_mover"], np.abs(times - 0.5) * np.linalg.norm(v0), rtol=1e-4,
                               atol=1e-6)
    assert curves["epe_mover"].max() < 1e-5 and curves["epe_all"].mean() == pytest.approx(exact["epe_mean"], rel=1e-5)
    assert exact["epe_mean_mover"] < 1e-5 and exact["epe_zero_motion_still"] == 0.0
    assert exact["epe_mean_still"] == pytest.approx(np.abs(times - 0.5).mean() * np.linalg.norm(v0), rel=1e-4)
    # at the time farthest from the query time (t = 0 and 1, half a unit away) the still object's track is off by
    # |v0| / 2 = 0.35: the worst error, and a third of the mean over the three tracks there
    assert exact["epe_max"] == pytest.approx(0.35, rel=1e-4)
    assert exact["epe_final"] == pytest.approx(0.35 / 3, rel=1e-4)
    still = score_against_ground_truth(_UniformMotionModel([0.0, 0.0, 0.0]), tmp_path / "motion_gt.npz")
    assert still["epe_mean"] == pytest.approx(still["epe_zero_motion"], rel=1e-6)
    assert still["epe_mean_mover"] == pytest.approx(still["epe_zero_motion_mover"], rel=1e-6)
    assert still["epe_mean_mover"] > 0.1


def test_the_no_motion_baseline_is_the_distance_to_the_query_points_at_any_query_time(tmp_path):
    """A field without motion keeps each track at its query point: its end-point error is the baseline, also when
    the query time falls between the ground truth's times."""
    from kinfield.motion import score_against_ground_truth

    v0 = np.array([0.6, -0.3, 0.2], np.float32)
    times = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    q = np.array([[0.0, 0.0, 0.0], [0.5, 0.1, -0.2]], np.float32)
    pos = q[None] + (times[:, None, None] - 0.37) * v0
    np.savez(tmp_path / "motion_gt.npz", times=times, query_time=np.float32(0.37), query_points=q, positions=pos,
             velocity=np.broadcast_to(v0, pos.shape).copy(), acceleration=np.zeros_like(pos), jerk=np.zeros_like(pos))
    still = score_against_ground_truth(_UniformMotionModel([0.0, 0.0, 0.0]), tmp_path / "motion_gt.npz")
    assert still["epe_zero_motion"] == pytest.approx(np.abs(times - 0.37).mean() * np.linalg.norm(v0), rel=1e-5)
    assert still["epe_mean"] == pytest.approx(still["epe_zero_motion"], rel=1e-5)
    exact = score_against_ground_truth(_UniformMotionModel(v0), tmp_path / "motion_gt.npz")
    assert exact["epe_mean"] < 1e-5


def test_orders_a_field_does_not_model_are_named_as_zeros():
    from kinfield.fields.kinematic import KinematicConfig, KinematicField
    from kinfield.motion.export import unmodelled_orders, untrained_orders

    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    for order, zeros in ((1, ["acceleration", "jerk"]), (2, ["jerk"]), (3, [])):
        kin = KinematicField(aabb, 0.1, KinematicConfig(order=order))
        assert untrained_orders(kin) == unmodelled_orders(kin) == zeros
    kin.set_active_orders(1)  # the curriculum has unlocked the velocity only
    assert untrained_orders(kin) == ["acceleration", "jerk"] and unmodelled_orders(kin) == []
