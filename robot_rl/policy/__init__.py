"""Policies: what turns an observation into a chunk of joint targets.

``base`` holds the interface and the factory; the scripted oracle and a random policy are the
policies of the walking skeleton, the VLA and its inference backends plug in behind the same
interface.
"""
