"""sub: reference vs float, vs TFLite Micro itself, and generated C vs reference, with
the operand shapes of test_mul (same shape, broadcast either order, constants)."""
from test_mul import (assert_c_matches_reference, assert_matches_tflm,
                      assert_reference_within_one_lsb, binary_graph)


def random_graph(rng, variant, shape=(1, 5, 4, 3)):
    return binary_graph("sub", shape, variant, rng,
                        lambda s_x, s_b: (s_x + s_b) * float(10 ** rng.uniform(-0.3, 0.5)))


def test_reference_within_one_lsb_of_float():
    assert_reference_within_one_lsb(random_graph, lambda a, b: a - b, 70)


def test_matches_tflite_micro():
    assert_matches_tflm(random_graph, 71)


def test_generated_c_matches_reference():
    assert_c_matches_reference(random_graph, 72)
