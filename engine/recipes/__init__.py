"""recipes layer"""
