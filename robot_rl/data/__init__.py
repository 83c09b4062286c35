"""Episodes on disk: the one format that demonstrations, the actor's spool and the learner share."""
