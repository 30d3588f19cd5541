"""voprd.sinks"""
