"""voprd.service"""
