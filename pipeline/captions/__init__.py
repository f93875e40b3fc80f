"""captions"""
