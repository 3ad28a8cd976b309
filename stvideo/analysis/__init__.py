"""Analysis above the models: FLOPs (fvcore + attention handles), speed, memory and their reports."""
