"""The finetune flow: the stages wired as the DAG reads (installed as embedforge.flows)."""
