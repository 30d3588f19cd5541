"""voprd.core"""
