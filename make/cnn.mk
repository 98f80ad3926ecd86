# CNN reproduction targets (ImageNet paper rows, Tiny-ImageNet families); included by the
# Makefile, which provides BIN and STAMP. Every target runs the experiment file of its name.
#   make reproduce-imagenet-resnet18-2w4a DATA=/path/to/imagenet [GPUS=8]
#   make tiny-imagenet-resnet18 [THREADS=2]   (THREADS=1 on a CPU shared with other jobs)
#   make tiny-imagenet-resnet18-progressive [PASSES=2]   (chained 2w4a passes)
GPUS ?= 8
THREADS ?= 2
# runs of the progressive targets' last experiment, each from the previous one (make_pass<k>)
PASSES ?= 2
TEACHERS ?= $(or $(ARCHNET_ROOT),.)/outputs/teachers
# one GPU count for the whole run; the global batch stays the paper's 256
IMAGENET_ARGS = data.module.root=$(DATA) trainer.devices=$(GPUS) distill.batch_size=$$((256 / $(GPUS)))
need-data = $(if $(DATA),,$(error DATA=/path/to/imagenet (train/ and val/ class folders) is required))
need-passes = $(if $(shell [ "$(PASSES)" -ge 1 ] 2>/dev/null && echo ok),,$(error PASSES=$(PASSES): a whole number >= 1 is required))
need-weights = $(if $(WEIGHTS),,$(error WEIGHTS=/path/to/mobilenet_v1 state dict is required: torchvision has none))

# $(call from-source,<source>,<experiment>): the Tiny-ImageNet ResNet-18 teacher if missing, the
# source experiment into outputs/<source>/make if missing, then the experiment, whose
# distill.init_student defaults to that run (progressive bits), into outputs/<experiment>/make,
# then PASSES - 1 more passes of it, each started from the previous one's student
# (outputs/<experiment>/make_pass<k>, k = 2..PASSES). A run whose student.pt exists is not
# run again, so PASSES=4 after PASSES=2 runs passes 3 and 4 only. On the 2w4a ResNet-18 the
# mean of two seeds rose by 0.39, 0.37 and 0.22 top-1 with passes 2, 3 and 4, single runs
# swinging by up to a point either way (docs/results.md).
define from-source
$(need-passes)
	test -f $(TEACHERS)/resnet18_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet18
	test -f outputs/$(1)/make/student.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=$(1) hydra.run.dir=outputs/$(1)/make
	test -f outputs/$(2)/make/student.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=$(2) hydra.run.dir=outputs/$(2)/make
	previous=outputs/$(2)/make; \
	for pass in $$(seq 2 $(PASSES)); do \
	  run=outputs/$(2)/make_pass$$pass; \
	  test -f $$run/student.pt || OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=$(2) \
	    distill.init_student=$$previous hydra.run.dir=$$run || exit 1; \
	  previous=$$run; \
	done
endef

reproduce-imagenet-resnet18-fp32: $(STAMP) ## ImageNet ResNet-18 float Arch-Net; the paper's 32w32a row is its teacher (69.76); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_resnet18_fp32_imagenet $(IMAGENET_ARGS)

reproduce-imagenet-resnet18-2w4a: $(STAMP) ## ImageNet ResNet-18 2w4a Arch-Net (paper top-1 68.77); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_resnet18_2w4a_imagenet $(IMAGENET_ARGS)

reproduce-imagenet-resnet34-fp32: $(STAMP) ## ImageNet ResNet-34 float Arch-Net; the paper's 32w32a row is its teacher (73.30); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_resnet34_fp32_imagenet $(IMAGENET_ARGS)

reproduce-imagenet-resnet34-2w4a: $(STAMP) ## ImageNet ResNet-34 2w4a Arch-Net (paper top-1 72.40); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_resnet34_2w4a_imagenet $(IMAGENET_ARGS)

reproduce-imagenet-resnet50-fp32: $(STAMP) ## ImageNet ResNet-50 float Arch-Net; the paper's 32w32a row is its teacher (76.13); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_resnet50_fp32_imagenet $(IMAGENET_ARGS)

reproduce-imagenet-resnet50-2w4a: $(STAMP) ## ImageNet ResNet-50 2w4a Arch-Net (paper top-1 74.56); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_resnet50_2w4a_imagenet $(IMAGENET_ARGS)

reproduce-imagenet-mobilenet_v1-fp32: $(STAMP) ## ImageNet MobileNetV1 float Arch-Net; the paper's 32w32a row is its teacher (-); DATA=... [GPUS=8] WEIGHTS=...
	$(need-data)$(need-weights)
	$(BIN)/archnet-distill experiment=archnet_mobilenet_v1_fp32_imagenet $(IMAGENET_ARGS) teacher.weights=$(WEIGHTS)

reproduce-imagenet-mobilenet_v1-2w4a: $(STAMP) ## ImageNet MobileNetV1 2w4a Arch-Net (paper top-1 67.29); DATA=... [GPUS=8] WEIGHTS=...
	$(need-data)$(need-weights)
	$(BIN)/archnet-distill experiment=archnet_mobilenet_v1_2w4a_imagenet $(IMAGENET_ARGS) teacher.weights=$(WEIGHTS)

reproduce-imagenet-mobilenet_v2-fp32: $(STAMP) ## ImageNet MobileNetV2 float Arch-Net; the paper's 32w32a row is its teacher (71.88); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_mobilenet_v2_fp32_imagenet $(IMAGENET_ARGS)

reproduce-imagenet-mobilenet_v2-2w4a: $(STAMP) ## ImageNet MobileNetV2 2w4a Arch-Net (paper top-1 69.09); DATA=... [GPUS=8]
	$(need-data)
	$(BIN)/archnet-distill experiment=archnet_mobilenet_v2_2w4a_imagenet $(IMAGENET_ARGS)

tiny-imagenet-resnet18: $(STAMP) ## Tiny-ImageNet-200 ResNet-18 family: teacher + 2w4a/4w4a/8w8a students (~1.7 h of one CPU core, est.)
	test -f $(TEACHERS)/resnet18_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet18
	for bits in 2w4a 4w4a 8w8a; do \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_resnet18_$$bits || exit 1; \
	done

tiny-imagenet-resnet18-calibrated: $(STAMP) ## Tiny-ImageNet-200 ResNet-18 students in BN units with calibrated activation ranges (docs/results.md; ~1.1 h of one CPU core once the teacher exists, est.)
	test -f $(TEACHERS)/resnet18_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet18
	for bits in 2w4a 4w4a 8w8a; do \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_resnet18_$${bits}_calibrated || exit 1; \
	done

tiny-imagenet-resnet18-preserved: $(STAMP) ## Tiny-ImageNet-200 ResNet-18 8w8a student from a function-preserving start (docs/results.md; ~50 min of one CPU core once the teacher exists)
	test -f $(TEACHERS)/resnet18_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet18
	OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_resnet18_8w8a_preserved

tiny-imagenet-resnet18-folded: $(STAMP) ## Tiny-ImageNet-200 ResNet-18 8w8a student with each add folded into its last conv (docs/results.md; 27 min wall with one thread on the 2-core box, other runs beside it, once the teacher exists)
	test -f $(TEACHERS)/resnet18_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet18
	OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_resnet18_8w8a_folded

tiny-imagenet-resnet18-progressive: $(STAMP) ## Tiny-ImageNet-200 ResNet-18 2w4a student started from the distilled 4w4a one (progressive bits), then PASSES chained 2w4a runs in all, each from the previous one's student (default 2; docs/results.md; 24 + 18 + 19 min wall with one thread on the 2-core box, other runs beside it, once the teacher exists)
	$(call from-source,tiny_imagenet_resnet18_4w4a_preserved,tiny_imagenet_resnet18_2w4a_progressive)

tiny-imagenet-resnet18-thin: $(STAMP) ## Tiny-ImageNet-200 ResNet-18 4w4a and 2w4a students below the teacher's MACs (0.97x; folded adds, 40 % inner channels; PASSES chained 2w4a runs, default 2; docs/results.md; 11 + 15 + 8 min wall with one thread on the 2-core box, other runs beside it, once the teacher exists)
	$(call from-source,tiny_imagenet_resnet18_4w4a_thin,tiny_imagenet_resnet18_2w4a_thin_progressive)

tiny-imagenet-resnet34: $(STAMP) ## Tiny-ImageNet-200 ResNet-34 family: teacher + 2w4a/4w4a/8w8a students (~3.8 h of one CPU core, est.)
	test -f $(TEACHERS)/resnet34_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet34
	for bits in 2w4a 4w4a 8w8a; do \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_resnet34_$$bits || exit 1; \
	done

tiny-imagenet-resnet50: $(STAMP) ## Tiny-ImageNet-200 ResNet-50 family: teacher + 2w4a/4w4a/8w8a students (~12.4 h of one CPU core, est.)
	test -f $(TEACHERS)/resnet50_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet50
	for bits in 2w4a 4w4a 8w8a; do \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_resnet50_$$bits || exit 1; \
	done

tiny-imagenet-mobilenet_v1: $(STAMP) ## Tiny-ImageNet-200 MobileNetV1 family: teacher + 2w4a/4w4a/8w8a students (~2.3 h of one CPU core, est.)
	test -f $(TEACHERS)/mobilenet_v1_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_mobilenet_v1
	for bits in 2w4a 4w4a 8w8a; do \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_mobilenet_v1_$$bits || exit 1; \
	done

tiny-imagenet-mobilenet_v2: $(STAMP) ## Tiny-ImageNet-200 MobileNetV2 family: teacher + 2w4a/4w4a/8w8a students (~9.0 h of one CPU core, est.)
	test -f $(TEACHERS)/mobilenet_v2_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_mobilenet_v2
	for bits in 2w4a 4w4a 8w8a; do \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-distill experiment=tiny_imagenet_mobilenet_v2_$$bits || exit 1; \
	done

.PHONY: reproduce-imagenet-resnet18-fp32 \
	reproduce-imagenet-resnet18-2w4a \
	reproduce-imagenet-resnet34-fp32 \
	reproduce-imagenet-resnet34-2w4a \
	reproduce-imagenet-resnet50-fp32 \
	reproduce-imagenet-resnet50-2w4a \
	reproduce-imagenet-mobilenet_v1-fp32 \
	reproduce-imagenet-mobilenet_v1-2w4a \
	reproduce-imagenet-mobilenet_v2-fp32 \
	reproduce-imagenet-mobilenet_v2-2w4a \
	tiny-imagenet-resnet18 \
	tiny-imagenet-resnet18-calibrated \
	tiny-imagenet-resnet18-preserved \
	tiny-imagenet-resnet18-folded \
	tiny-imagenet-resnet18-progressive \
	tiny-imagenet-resnet18-thin \
	tiny-imagenet-resnet34 \
	tiny-imagenet-resnet50 \
	tiny-imagenet-mobilenet_v1 \
	tiny-imagenet-mobilenet_v2
