"""The imperative shell on Kafka: a sequencer that puts input records in one order, and the fold that applies them."""
