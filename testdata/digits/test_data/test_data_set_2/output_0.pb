
BlogitsJ((·ÌÁ]äs@’wDÀOË	Áv«Ác›RÁ|WŒÀ{bÂhu>À©uUÁ