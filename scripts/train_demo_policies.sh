#!/usr/bin/env bash
# Reproduce the demo policies in models/: seeded expert demonstrations (rosbag2 MCAP) -> seeded
# CfC/NCP behaviour cloning -> DAgger rounds on the built-in simulator (the policy drives, the
# expert relabels every state it visits) -> models/<robot>.npz (lnn_control.runtime.model_file format,
# what lnn_controller loads) + loss / rollout plots. The two robots train in parallel, one core each.
# diff_drive rolls out DAgger and evaluation episodes through its safety filter (--filter-in-loop), as deployed;
# its network does not read the measured (v, omega) (--inputs no_velocity: on the kinematic base that is its
# own last command, which a cloned network learns to repeat); ~31 min on one core.
# arm: the network learns the residual of the MJCF's gravity torque (--feedforward gravity) from the goal
# error and the joint velocities (--inputs goal_error); the model file stores both and its stepper adds
# them back (lnn_control/runtime/feedforward.py), so the node and `lnn-control evaluate` run the same;
# 4 DAgger rounds (rollouts of that structure, expert relabels) teach it to brake where it overshot.
# Usage: scripts/train_demo_policies.sh [PYTHON]   (default .venv/bin/python; run from the repo root)
# CONFIG_DIR (default config/) holds <robot>.yaml; DATA_DIR (default out/demos) receives the bags;
# MODELS_DIR (default models/) receives <robot>.npz plus plots; ROBOTS (default "diff_drive arm"; lane: ROBOTS=lane).
# BARRIERNET=1 (optional, default off): train end to end through the safety filter's QP instead
# (lnn-control train --barriernet: class-K gain head named as the filter's gain_names) into
# <robot>_barriernet.npz, with the same noise / DAgger episodes (they record the filter state) but
# no goal relabelling (relabelled episodes would pair new goals with old filter states).
# models/diff_drive_barriernet.npz is `BARRIERNET=1 ROBOTS=diff_drive`; the other models/ are the
# default recipe. Every run is `lnn-control train` (lnn_control.learn.recipe.train), seeded.
# Smoke run (not the shipped models): EPISODES=N overrides the demonstrations per robot, and
# EXTRA="--epochs 1 --dagger-rounds 0 ..." is appended to each train command line (last value wins).
set -euo pipefail
PY=${1:-.venv/bin/python}
CONFIG_DIR=${CONFIG_DIR:-config}
DATA_DIR=${DATA_DIR:-out/demos}
MODELS_DIR=${MODELS_DIR:-models}
ROBOTS=${ROBOTS:-"diff_drive arm"}
BARRIERNET=${BARRIERNET:-0}
EPISODES=${EPISODES:-}
read -r -a extra <<< "${EXTRA:-}"
export OMP_NUM_THREADS=1  # bit-reproducible CPU training
common=(--cell cfc --wiring ncp --units 32 --motor 10 --window 32 --batch 16 --lr 5e-3 --seed 0
        --dagger-beta 0.5 --eval-episodes 10 --no-progress)
train() {
  local robot=$1 episodes=${EPISODES:-$2}; shift 2
  rm -rf "${DATA_DIR:?}/$robot"
  "$PY" -m lnn_control.learn.record --robot "$robot" --episodes "$episodes" --out "$DATA_DIR/$robot" --seed 100 \
    > "$DATA_DIR/$robot.record.log"
  local out="$MODELS_DIR/$robot.npz"
  if [ "$BARRIERNET" = 1 ]; then
    local args=() skip=0 a
    for a in "$@"; do  # drop goal relabelling and its value
      if [ $skip = 1 ]; then skip=0; continue; fi
      case $a in --goal-relabel|--feedforward|--inputs) skip=1; continue ;; esac  # plain network through the QP
      args+=("$a")
    done
    set -- "${args[@]}" --barriernet
    out="$MODELS_DIR/${robot}_barriernet.npz"
  fi
  "$PY" -m lnn_control.cli train --config "$CONFIG_DIR/$robot.yaml" --data "$DATA_DIR/$robot" \
    "${common[@]}" "$@" ${extra[@]+"${extra[@]}"} --out "$out"
}
mkdir -p "$DATA_DIR" "$MODELS_DIR"
pids=()
for robot in $ROBOTS; do
  case $robot in
    diff_drive) train diff_drive 48 --epochs 20 --patience 20 --noise-episodes 16 --action-noise 0.15 \
      --inputs no_velocity --dagger-rounds 12 --dagger-episodes 24 --dagger-epochs 6 --eval-episodes 16 \
      --filter-in-loop & ;;
    arm) train arm 40 --epochs 15 --patience 15 --batch 8 --goal-relabel 3 --feedforward gravity --inputs goal_error \
      --dagger-rounds 4 --dagger-episodes 16 --dagger-epochs 5 --eval-episodes 20 & ;;
    # lane (ROBOTS=lane): camera lane keeping, a conv head + CfC on a 19-neuron NCP (--model conv_ncp) on
    # the grey camera frame + speed (config/lane.yaml); no recordings: 24 expert episodes with the
    # privileged pose and an action disturbance (DART) on training tracks, image noise augmentation
    # (--input-noise), 2 DAgger rounds through the lane-boundary filter (--filter-in-loop); ~10 min.
    lane) "$PY" -m lnn_control.cli train --config "$CONFIG_DIR/lane.yaml" --model conv_ncp --cell cfc --units 19 \
      --window 32 --batch 16 --lr 1e-2 --seed 0 --epochs 30 --patience 30 --noise-episodes 24 --action-noise 0.1 \
      --input-noise 0.05 --dagger-rounds 2 --dagger-episodes 8 --dagger-epochs 5 --dagger-beta 0.5 \
      --eval-episodes 10 --filter-in-loop --no-progress ${extra[@]+"${extra[@]}"} --out "$MODELS_DIR/lane.npz" & ;;
    *) echo "unknown robot $robot" >&2; exit 2 ;;
  esac
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
