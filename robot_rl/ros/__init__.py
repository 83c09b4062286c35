"""ROS 2 adapters: message <-> numpy conversion, QoS profiles, parameter and diagnostics helpers.

Everything ROS-specific that is not a node lives here, so nodes stay thin and the conversions are
unit-tested without a running graph.
"""
