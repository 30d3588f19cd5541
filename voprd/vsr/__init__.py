"""voprd.vsr"""
