"""Systems under test that plug into the simulation engine (`voprd.sim.system`).

`voprd.systems.vsr` is the builtin one (target `builtin`). A user's own system is a plugin of the
same shape anywhere on the import path (docs/writing-a-plugin.md; examples/ has one).
"""
