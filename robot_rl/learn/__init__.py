"""The learner side: behaviour cloning now; PPO with demo replay and checkpointing later."""
