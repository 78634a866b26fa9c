"""What a loaded model computes, by request type, shared by every evaluator."""
