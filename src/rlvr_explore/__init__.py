"""rlvr-explore: RL with verifiable rewards for language models, built around the methods that
keep exploration alive (CaSP/SimKO, GRPO-N, STILL's shaping, SPS). See README.md and docs/architecture.md."""

__version__ = "0.1.0"
