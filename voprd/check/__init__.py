"""voprd.check"""
