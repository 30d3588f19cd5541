"""voprd.sim"""
