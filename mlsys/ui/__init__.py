"""The dashboard (`mlsys ui`): a read API over the home, its JSON routes and pages (docs/ui.md)."""
