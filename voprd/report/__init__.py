"""voprd.report"""
