"""ZeroMQ transport between robots, learner and critic server: the wire format."""
