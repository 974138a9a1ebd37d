"""Renderers: results to Rich renderables or to JSON documents. They never compute."""
