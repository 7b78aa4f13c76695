.PHONY: demo test bench

demo:
	cargo build --release -p hb-tools
	./target/release/hb-info fixtures/sem_decoder/model.onnx
	./target/release/hb-model-exec infer --model-file fixtures/digits_cnn/model.onnx \
		--input-file fixtures/digits_cnn/test/image/0.npy --output-dir out/digits
	./target/release/hb-model-exec infer --model-file fixtures/sem_decoder/model.onnx \
		--input-file fixtures/sem_decoder/test --output-dir out/sem_decoder
	./target/release/hb-model-exec perf --model-file fixtures/resnet_tiny/model.onnx \
		--input-file fixtures/resnet_tiny/test --thread-num 1 --frame-count 100
	./target/release/hb-calib --config fixtures/sem_decoder/model.yaml
	./target/release/hb-info target/hb_calib/sem_decoder/sem_decoder_calibrated_model.onnx \
		-c fixtures/sem_decoder/test

test:
	cargo test --workspace

bench:
	cargo xtask bench
