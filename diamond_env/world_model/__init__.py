"""The world model: networks plus starting contexts (``model``), its fast inference paths
(``fastpath``), DIAMOND's checkpoint format (``diamond_format``) and its FLOP count (``flops``)."""
