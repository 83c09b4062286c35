import numpy as np

from robot_rl.policy.text import EMBEDDING_DIM, InstructionEncoder


def test_real_sentence_encoder_embeds_meaning(encoder):
    reach = encoder.encode("reach the red cube")
    assert reach.shape == (EMBEDDING_DIM,) and reach.dtype == np.float32
    assert abs(np.linalg.norm(reach) - 1.0) < 1e-4
    close = encoder.encode("move to the red block")
    far = encoder.encode("press the blue button")
    assert reach @ close > reach @ far  # paraphrase nearer than another task


def test_embeddings_are_cached_per_normalised_instruction(encoder):
    a = encoder.encode("Pick up the red cube.")
    assert encoder.encode("  pick up the   red cube") is a


def test_a_table_answers_without_loading_the_encoder():
    table = {"reach the red cube": np.ones(EMBEDDING_DIM, np.float32)}
    enc = InstructionEncoder(table)
    assert enc.encode("Reach the red cube").sum() == EMBEDDING_DIM
    assert not enc.loaded
