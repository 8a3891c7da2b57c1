"""jobs layer"""
