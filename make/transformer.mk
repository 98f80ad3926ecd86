# Transformer (Multi30k) recipes; included by the Makefile. `make help` lists them.
# Paper rows run on a GPU (trainer=gpu); TRAINER=cpu to override. The teacher checkpoint is
# trained once per direction (outputs/teachers/transformer_multi30k_<dir>_seed0.pt).
TRAINER ?= gpu
TEACHERS := $(or $(ARCHNET_ROOT),.)/outputs/teachers

$(TEACHERS)/transformer_multi30k_%_seed0.pt: | $(STAMP)
	$(BIN)/archnet-teacher experiment=archnet_transformer_fp32_multi30k_$* trainer=$(TRAINER)

$(TEACHERS)/transformer_small_multi30k_ende_seed0.pt: | $(STAMP)
	$(BIN)/archnet-teacher experiment=multi30k_small_ende_fp32

teacher-multi30k-ende: $(TEACHERS)/transformer_multi30k_ende_seed0.pt ## train the paper's Transformer teacher en->de (32w32a row)
teacher-multi30k-deen: $(TEACHERS)/transformer_multi30k_deen_seed0.pt ## train the paper's Transformer teacher de->en (32w32a row)

reproduce-multi30k-ende-fp32: teacher-multi30k-ende ## paper row 32w32a en->de: teacher BLEU (+ float Arch-Net student)
	$(BIN)/archnet-distill experiment=archnet_transformer_fp32_multi30k_ende trainer=$(TRAINER)
reproduce-multi30k-ende-2w4a: teacher-multi30k-ende ## paper row 2w4a en->de: distill the LSQ 2w4a student
	$(BIN)/archnet-distill experiment=archnet_transformer_2w4a_multi30k_ende trainer=$(TRAINER)
reproduce-multi30k-ende-4w4a: teacher-multi30k-ende ## paper row 4w4a en->de: distill the LSQ 4w4a student
	$(BIN)/archnet-distill experiment=archnet_transformer_4w4a_multi30k_ende trainer=$(TRAINER)
reproduce-multi30k-ende-8w8a: teacher-multi30k-ende ## paper row 8w8a en->de: distill the LSQ 8w8a student
	$(BIN)/archnet-distill experiment=archnet_transformer_8w8a_multi30k_ende trainer=$(TRAINER)
reproduce-multi30k-deen-fp32: teacher-multi30k-deen ## paper row 32w32a de->en: teacher BLEU (+ float Arch-Net student)
	$(BIN)/archnet-distill experiment=archnet_transformer_fp32_multi30k_deen trainer=$(TRAINER)
reproduce-multi30k-deen-2w4a: teacher-multi30k-deen ## paper row 2w4a de->en: distill the LSQ 2w4a student
	$(BIN)/archnet-distill experiment=archnet_transformer_2w4a_multi30k_deen trainer=$(TRAINER)
reproduce-multi30k-deen-4w4a: teacher-multi30k-deen ## paper row 4w4a de->en: distill the LSQ 4w4a student
	$(BIN)/archnet-distill experiment=archnet_transformer_4w4a_multi30k_deen trainer=$(TRAINER)
reproduce-multi30k-deen-8w8a: teacher-multi30k-deen ## paper row 8w8a de->en: distill the LSQ 8w8a student
	$(BIN)/archnet-distill experiment=archnet_transformer_8w8a_multi30k_deen trainer=$(TRAINER)
reproduce-multi30k: reproduce-multi30k-ende-fp32 reproduce-multi30k-ende-2w4a reproduce-multi30k-ende-4w4a reproduce-multi30k-ende-8w8a reproduce-multi30k-deen-fp32 reproduce-multi30k-deen-2w4a reproduce-multi30k-deen-4w4a reproduce-multi30k-deen-8w8a ## all eight Transformer rows of the paper (GPU)

SMALL_TEACHER := $(TEACHERS)/transformer_small_multi30k_ende_seed0.pt
reproduce-multi30k-small-ende-2w4a: $(SMALL_TEACHER) ## CPU-sized en->de: small teacher + 2w4a student (< 2 h on 2 cores)
	$(BIN)/archnet-distill experiment=multi30k_small_ende_2w4a
reproduce-multi30k-small-ende-4w4a: $(SMALL_TEACHER) ## CPU-sized en->de: 4w4a student of the small teacher
	$(BIN)/archnet-distill experiment=multi30k_small_ende_4w4a
reproduce-multi30k-small-ende-8w8a: $(SMALL_TEACHER) ## CPU-sized en->de: 8w8a student of the small teacher
	$(BIN)/archnet-distill experiment=multi30k_small_ende_8w8a
reproduce-multi30k-small-ende-2w4a-labelfree: $(SMALL_TEACHER) ## CPU-sized en->de 2w4a, label-free: the teacher's translations as targets
	$(BIN)/archnet-distill experiment=multi30k_small_ende_2w4a data.targets=teacher name=multi30k_small_ende_2w4a_labelfree
reproduce-multi30k-small-ende: reproduce-multi30k-small-ende-2w4a reproduce-multi30k-small-ende-4w4a reproduce-multi30k-small-ende-8w8a reproduce-multi30k-small-ende-2w4a-labelfree ## all CPU-sized en->de runs: 2w4a, 4w4a, 8w8a and label-free 2w4a

.PHONY: teacher-multi30k-ende teacher-multi30k-deen reproduce-multi30k reproduce-multi30k-ende-fp32 reproduce-multi30k-ende-2w4a reproduce-multi30k-ende-4w4a reproduce-multi30k-ende-8w8a reproduce-multi30k-deen-fp32 reproduce-multi30k-deen-2w4a reproduce-multi30k-deen-4w4a reproduce-multi30k-deen-8w8a reproduce-multi30k-small-ende-2w4a reproduce-multi30k-small-ende-4w4a reproduce-multi30k-small-ende-8w8a reproduce-multi30k-small-ende-2w4a-labelfree reproduce-multi30k-small-ende
