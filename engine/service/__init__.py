"""service layer"""
