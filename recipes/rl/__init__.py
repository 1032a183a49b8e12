"""The RL stage: GRPO on the AR model's visual tokens with pluggable rewards (objective, rewards, rollouts, module)."""
